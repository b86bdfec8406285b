// History-API routing: paths like /instances and /desktop/<id> (the gateway serves index.html for
// them, so a reload lands on the same page). Links with data-link navigate without a page load.

export interface Route {
  name: string;
  params: Record<string, string>;
  path: string;
}

interface Pattern {
  name: string;
  regex: RegExp;
  keys: string[];
}

export function compile(name: string, path: string): Pattern {
  const keys: string[] = [];
  const source = path
    .split('/')
    .map((part) => {
      if (part.startsWith(':')) {
        keys.push(part.slice(1));
        return '([^/]+)';
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    })
    .join('/');
  return { name, regex: new RegExp(`^${source}/?$`), keys };
}

export function match(patterns: Pattern[], path: string): Route | null {
  for (const p of patterns) {
    const m = p.regex.exec(path);
    if (!m) continue;
    const params: Record<string, string> = {};
    p.keys.forEach((k, i) => {
      params[k] = decodeURIComponent(m[i + 1] ?? '');
    });
    return { name: p.name, params, path };
  }
  return null;
}

export class Router {
  private readonly patterns: Pattern[];

  constructor(
    routes: Record<string, string>,
    private readonly onChange: (route: Route | null, path: string) => void,
  ) {
    this.patterns = Object.entries(routes).map(([name, path]) => compile(name, path));
    window.addEventListener('popstate', () => this.resolve());
    document.addEventListener('click', (event) => {
      const link = (event.target as Element | null)?.closest?.('a[data-link]');
      if (!(link instanceof HTMLAnchorElement)) return;
      if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey)
        return;
      event.preventDefault();
      this.go(link.pathname + link.search);
    });
  }

  get path(): string {
    return location.pathname;
  }

  go(path: string, options: { replace?: boolean } = {}): void {
    if (options.replace) history.replaceState(null, '', path);
    else if (path !== location.pathname + location.search) history.pushState(null, '', path);
    this.resolve();
  }

  resolve(): void {
    const path = location.pathname;
    this.onChange(match(this.patterns, path), path);
  }
}
