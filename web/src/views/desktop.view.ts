// The desktop viewer page: a compact toolbar (scaling, quality, view only, keys, clipboard, full
// screen, end session), the desktop filling the rest of the window, a one-line status bar (state,
// size, round trip, kbit/s) and overlays for connecting, reconnecting, ended and failed — drawn over
// the desktop so nothing around it moves.
import { describeError } from '../api/api-error.js';
import type { AppContext, View } from '../app-context.js';
import { h, icon, uid } from '../lib/dom.js';
import { desktopLabel, formatRate, formatRtt } from '../lib/format.js';
import type { Quality, Scaling } from '../lib/prefs.js';
import { confirmDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';
import { DesktopConnection, type LinkStats, type ViewerState } from '../viewer/desktop-connection.js';
import { keyCombos } from '../viewer/key-combos.js';
import { qualityPresets } from '../viewer/quality.js';
import { progressSteps } from './progress-steps.js';

const SCALING: Array<{ value: Scaling; label: string; title: string }> = [
  { value: 'fit', label: 'Fit', title: 'Scale the desktop to fit the window' },
  { value: 'remote', label: 'Resize', title: 'Resize the remote desktop to this window' },
  { value: 'native', label: '1:1', title: 'Actual pixels, scroll if larger than the window' },
];

export function desktopView(ctx: AppContext, sessionId: string): View {
  const pending = ctx.pendingConnects.get(sessionId);
  ctx.pendingConnects.delete(sessionId);
  let viewOnly = false;

  // ---- toolbar ----
  const title = h('span', { class: 'viewer-title-name' }, pending?.instanceName ?? 'Desktop');
  const subtitle = h(
    'span',
    { class: 'viewer-title-sub' },
    pending ? `${desktopLabel(pending.desktopEnvironment)} · :${pending.display}` : '',
  );
  const back = h(
    'a',
    {
      href: '/instances',
      'data-link': true,
      class: 'btn btn-ghost btn-icon viewer-back',
      'aria-label': 'Back to instances (the desktop keeps running)',
      title: 'Back to instances — the desktop keeps running',
    },
    icon('back'),
  );

  const scalingName = uid('scaling');
  const scaling = h(
    'fieldset',
    { class: 'segmented segmented-dark' },
    h('legend', { class: 'visually-hidden' }, 'Scaling'),
  );
  for (const option of SCALING) {
    const id = uid('scaling');
    const input = h('input', {
      type: 'radio',
      name: scalingName,
      value: option.value,
      id,
    });
    input.checked = ctx.prefs.scaling === option.value;
    input.addEventListener('change', () => {
      ctx.prefs.scaling = option.value;
      ctx.savePrefs();
      connection.setScaling(option.value);
    });
    scaling.append(
      input,
      h('label', { for: id, title: option.title, 'data-testid': `scaling-${option.value}` }, option.label),
    );
  }

  const qualityId = uid('quality');
  const quality = h('select', { id: qualityId, class: 'select select-dark', 'data-testid': 'quality' });
  for (const [value, preset] of Object.entries(qualityPresets)) {
    const option = h('option', { value, title: preset.hint }, preset.label);
    option.selected = ctx.prefs.quality === value;
    quality.append(option);
  }
  quality.addEventListener('change', () => {
    const value = quality.value as Quality;
    ctx.prefs.quality = value;
    ctx.savePrefs();
    connection.setQuality(value);
  });

  const viewOnlyButton = h(
    'button',
    {
      type: 'button',
      class: 'btn btn-toolbar',
      'aria-pressed': 'false',
      'data-testid': 'view-only',
      title: 'Watch without sending keyboard or mouse input',
    },
    icon('eye', 16),
    h('span', { class: 'toolbar-label' }, 'View only'),
  );
  viewOnlyButton.addEventListener('click', () => {
    viewOnly = !viewOnly;
    viewOnlyButton.setAttribute('aria-pressed', String(viewOnly));
    connection.setViewOnly(viewOnly);
    root.classList.toggle('is-view-only', viewOnly);
    if (!viewOnly) connection.focus();
  });

  // Keys: a disclosure menu of combinations the browser would otherwise keep.
  const keysMenu = h('details', { class: 'menu' });
  const keysList = h('div', { class: 'menu-panel', role: 'group', 'aria-label': 'Send keys' });
  for (const combo of keyCombos) {
    const item = h(
      'button',
      { type: 'button', class: 'menu-item', 'data-testid': `keys-${combo.id}` },
      combo.label,
    );
    item.addEventListener('click', () => {
      keysMenu.open = false;
      connection.sendKeys(combo);
    });
    keysList.append(item);
  }
  keysMenu.append(
    h(
      'summary',
      { class: 'btn btn-toolbar', title: 'Send key combinations' },
      icon('keyboard', 16),
      h('span', { class: 'toolbar-label' }, 'Keys'),
    ),
    keysList,
  );

  // Clipboard: what the desktop copied, and text to send to it.
  const clipboardText = h('textarea', {
    id: uid('clipboard'),
    rows: 5,
    class: 'clipboard-text',
    'data-testid': 'clipboard-text',
    placeholder: 'Text copied on the desktop shows up here. Type or paste here to send it.',
  });
  const sendClipboard = h(
    'button',
    { type: 'button', class: 'btn btn-primary btn-sm', 'data-testid': 'clipboard-send' },
    'Send to desktop',
  );
  const copyLocal = h('button', { type: 'button', class: 'btn btn-secondary btn-sm' }, 'Copy');
  const clipboardStatus = h('p', { class: 'field-hint', 'aria-live': 'polite' });
  sendClipboard.addEventListener('click', () => {
    const ok = connection.pasteToDesktop(clipboardText.value);
    clipboardStatus.textContent = ok
      ? 'Sent. Paste it on the desktop (e.g. Ctrl+Shift+V in a terminal).'
      : 'Not connected (or view only).';
  });
  copyLocal.addEventListener('click', () => {
    navigator.clipboard?.writeText(clipboardText.value).then(
      () => (clipboardStatus.textContent = 'Copied to this computer’s clipboard.'),
      () =>
        (clipboardStatus.textContent =
          'The browser did not allow copying; select the text and press Ctrl+C.'),
    );
  });
  const clipboardMenu = h('details', { class: 'menu menu-wide' });
  clipboardMenu.append(
    h(
      'summary',
      { class: 'btn btn-toolbar', title: 'Clipboard' },
      icon('clipboard', 16),
      h('span', { class: 'toolbar-label' }, 'Clipboard'),
    ),
    h(
      'div',
      { class: 'menu-panel clipboard-panel' },
      h('label', { for: clipboardText.id, class: 'label' }, 'Clipboard'),
      clipboardText,
      h('div', { class: 'menu-actions' }, copyLocal, sendClipboard),
      clipboardStatus,
    ),
  );

  const fullscreen = h(
    'button',
    { type: 'button', class: 'btn btn-toolbar', title: 'Full screen', 'aria-pressed': 'false' },
    icon('maximize', 16),
    h('span', { class: 'toolbar-label' }, 'Full screen'),
  );
  fullscreen.addEventListener('click', () => toggleFullscreen(root));
  const onFullscreenChange = () => {
    const on = document.fullscreenElement === root;
    fullscreen.setAttribute('aria-pressed', String(on));
    fullscreen.replaceChildren(
      icon(on ? 'minimize' : 'maximize', 16),
      h('span', { class: 'toolbar-label' }, on ? 'Exit full screen' : 'Full screen'),
    );
    if (on) void lockKeyboard();
    connection.focus();
  };
  document.addEventListener('fullscreenchange', onFullscreenChange);

  const endButton = h(
    'button',
    {
      type: 'button',
      class: 'btn btn-toolbar btn-toolbar-danger',
      'data-testid': 'end-session',
      title: 'Stop the desktop on the instance',
    },
    icon('power', 16),
    h('span', { class: 'toolbar-label' }, 'End session'),
  );
  endButton.addEventListener('click', () => {
    void confirmDialog({
      title: 'End this session?',
      message:
        'The desktop and every program running in it will be closed on the instance. Unsaved work is lost.',
      confirmLabel: 'End session',
      danger: true,
    }).then((yes) => {
      if (!yes) return;
      endButton.disabled = true;
      ctx.api.endSession(sessionId).then(
        () => {
          connection.stop();
          toast('Session ended.', 'success');
          ctx.go('/instances');
        },
        (e: unknown) => {
          endButton.disabled = false;
          toast(describeError(e), 'error');
        },
      );
    });
  });

  const toolbar = h(
    'header',
    { class: 'viewer-toolbar' },
    back,
    h('div', { class: 'viewer-title' }, title, subtitle),
    h(
      'div',
      { class: 'toolbar-group', role: 'toolbar', 'aria-label': 'Viewer controls' },
      scaling,
      h('label', { for: qualityId, class: 'visually-hidden' }, 'Quality'),
      quality,
      viewOnlyButton,
      keysMenu,
      clipboardMenu,
      fullscreen,
      endButton,
    ),
  );

  // Close the open menu when clicking elsewhere (details elements do not do it themselves).
  const closeMenus = (event: Event) => {
    for (const menu of [keysMenu, clipboardMenu]) {
      if (menu.open && !menu.contains(event.target as Node)) menu.open = false;
    }
  };
  document.addEventListener('pointerdown', closeMenus);

  // ---- desktop area ----
  const target = h('div', { class: 'viewer-screen', 'data-testid': 'screen' });
  const ghost = h('div', { class: 'viewer-ghost', 'aria-hidden': 'true' });
  const overlay = h('div', { class: 'viewer-overlay', hidden: true });
  const stage = h('div', { class: 'viewer-stage' }, ghost, target, overlay);

  // ---- status line ----
  const stateText = h('span', { class: 'status-state', 'data-testid': 'viewer-status' }, 'Connecting…');
  const stateDot = h('span', { class: 'dot', 'aria-hidden': 'true' });
  const sizeText = h('span', { class: 'status-item' });
  const rttText = h('span', { class: 'status-item', 'data-testid': 'rtt' }, 'RTT —');
  const rateText = h('span', { class: 'status-item', 'data-testid': 'rate' }, '↓ — ↑ —');
  const status = h(
    'footer',
    { class: 'viewer-status' },
    h('span', { class: 'status-live', role: 'status', 'aria-live': 'polite' }, stateDot, stateText),
    h('span', { class: 'status-spacer' }),
    sizeText,
    h('span', { title: 'Round trip to the desktop' }, rttText),
    h('span', { title: 'Current throughput: from the desktop ↓, to the desktop ↑' }, rateText),
  );

  const root = h(
    'div',
    { class: 'viewer', 'data-state': 'connecting', 'data-testid': 'viewer' },
    toolbar,
    stage,
    status,
  );
  const element = h(
    'section',
    { class: 'viewer-page' },
    h('h1', { class: 'visually-hidden' }, 'Desktop'),
    root,
  );

  // ---- overlays ----
  const steps = progressSteps(['Connecting over SSH', 'Starting the desktop', 'Waiting for the display']);
  steps.set(0, 'done');
  steps.set(1, 'done');
  steps.set(2, 'active');

  const showOverlay = (content: HTMLElement | null) => {
    overlay.hidden = content === null;
    overlay.replaceChildren(...(content ? [content] : []));
  };

  const overlayCard = (opts: {
    tone: 'info' | 'error';
    heading: string;
    text: string;
    actions?: HTMLElement[];
    extra?: HTMLElement;
    testid: string;
  }) =>
    h(
      'div',
      {
        class: `overlay-card overlay-${opts.tone}`,
        role: opts.tone === 'error' ? 'alert' : 'status',
        'data-testid': opts.testid,
      },
      h('h2', { class: 'overlay-title' }, opts.heading),
      h('p', { class: 'overlay-text' }, opts.text),
      opts.extra ?? null,
      opts.actions ? h('div', { class: 'overlay-actions' }, ...opts.actions) : null,
    );

  const backLink = () =>
    h('a', { href: '/instances', 'data-link': true, class: 'btn btn-secondary' }, 'Back to instances');

  const render = (state: ViewerState) => {
    root.dataset.state = state.kind;
    stateDot.className = `dot dot-${state.kind}`;
    switch (state.kind) {
      case 'connecting':
        stateText.textContent = 'Waiting for the display…';
        showOverlay(
          h(
            'div',
            { class: 'overlay-card', role: 'status', 'data-testid': 'overlay-connecting' },
            h('h2', { class: 'overlay-title' }, 'Opening the desktop'),
            steps.element,
          ),
        );
        break;
      case 'connected':
        stateText.textContent = 'Connected';
        steps.set(2, 'done');
        showOverlay(null);
        break;
      case 'reconnecting':
        stateText.textContent =
          state.attempt > 1 ? `Reconnecting… (attempt ${state.attempt})` : 'Reconnecting…';
        showOverlay(
          overlayCard({
            tone: 'info',
            heading: 'Reconnecting…',
            text: state.detail,
            testid: 'overlay-reconnecting',
            extra: h('span', { class: 'spinner', 'aria-hidden': 'true' }),
            actions: [backLink()],
          }),
        );
        break;
      case 'ended': {
        stateText.textContent = 'Session ended';
        const instances = h(
          'a',
          { href: '/instances', 'data-link': true, class: 'btn btn-primary' },
          'Back to instances',
        );
        showOverlay(
          overlayCard({
            tone: 'info',
            heading: state.message,
            text: 'The desktop was closed — by you, in another window, or after it sat idle. Connect again to start a new one.',
            testid: 'overlay-ended',
            actions: [instances],
          }),
        );
        instances.focus();
        break;
      }
      case 'signed-out':
        stateText.textContent = 'Signed out';
        ctx.setFlash({ message: state.message, tone: 'error' });
        ctx.go(`/sign-in?next=${encodeURIComponent(`/desktop/${sessionId}`)}`, { replace: true });
        break;
      case 'failed': {
        stateText.textContent = 'Disconnected';
        const retry = h(
          'button',
          { type: 'button', class: 'btn btn-primary' },
          icon('refresh', 16),
          'Try again',
        );
        retry.addEventListener('click', () => connection.retry());
        showOverlay(
          overlayCard({
            tone: 'error',
            heading: 'Disconnected',
            text: state.message,
            testid: 'overlay-failed',
            actions: [retry, backLink()],
          }),
        );
        retry.focus();
        break;
      }
    }
  };

  const renderStats = (stats: LinkStats) => {
    sizeText.textContent = stats.width > 0 ? `${stats.width}×${stats.height}` : '';
    rttText.textContent = `RTT ${formatRtt(stats.rttMs)}`;
    rateText.textContent = `↓ ${formatRate(stats.downBitsPerSecond)} ↑ ${formatRate(stats.upBitsPerSecond)}`;
  };

  const connection = new DesktopConnection({
    target,
    ghost,
    sessionId,
    tickets: ctx.api,
    settings: { scaling: ctx.prefs.scaling, quality: ctx.prefs.quality, viewOnly },
    onState: render,
    onStats: renderStats,
    onClipboard: (text) => {
      clipboardText.value = text;
      clipboardStatus.textContent = `Received ${text.length} character${text.length === 1 ? '' : 's'} from the desktop.`;
      // Straight into the local clipboard when the browser allows it (focused page, secure context).
      navigator.clipboard?.writeText(text).catch(() => undefined);
    },
  });

  // Clicking into the desktop: offer the local clipboard to it, where the browser already allows reading it.
  let lastOffered = '';
  const offerLocalClipboard = () => {
    if (!navigator.clipboard?.readText || !navigator.permissions) return;
    navigator.permissions.query({ name: 'clipboard-read' as PermissionName }).then(
      (permission) => {
        if (permission.state !== 'granted') return;
        navigator.clipboard.readText().then(
          (text) => {
            if (text !== '' && text !== lastOffered && connection.pasteToDesktop(text)) lastOffered = text;
          },
          () => undefined,
        );
      },
      () => undefined,
    );
  };
  target.addEventListener('pointerdown', offerLocalClipboard);

  render({ kind: 'connecting' });
  connection.start(pending?.websocketUrl);

  // Labels for a reloaded page (the connect dialog's hand-off is gone then).
  if (!pending) {
    ctx.api.activeSessions().then(
      (list) => {
        const s = list.find((x) => x.id === sessionId);
        if (!s) return;
        title.textContent = s.instanceName ?? 'Desktop';
        subtitle.textContent = `${desktopLabel(s.desktopEnvironment)}${s.display !== null ? ` · :${s.display}` : ''}`;
        document.title = `${title.textContent} · CloudDesk`;
      },
      () => undefined,
    );
  }

  return {
    element,
    title: pending?.instanceName ?? 'Desktop',
    immersive: true,
    destroy() {
      connection.stop();
      document.removeEventListener('fullscreenchange', onFullscreenChange);
      document.removeEventListener('pointerdown', closeMenus);
      if (document.fullscreenElement) void document.exitFullscreen().catch(() => undefined);
    },
  };
}

function toggleFullscreen(el: HTMLElement): void {
  if (document.fullscreenElement) void document.exitFullscreen().catch(() => undefined);
  else
    void el
      .requestFullscreen({ navigationUI: 'hide' })
      .catch(() => toast('The browser refused full screen.', 'error'));
}

/** In full screen, let Escape, Alt+Tab and friends reach the desktop where the browser supports it. */
async function lockKeyboard(): Promise<void> {
  const keyboard = (navigator as Navigator & { keyboard?: { lock?: () => Promise<void> } }).keyboard;
  try {
    await keyboard?.lock?.();
  } catch {
    // not supported or not allowed: the Keys menu still works
  }
}
