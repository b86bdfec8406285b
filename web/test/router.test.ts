import { describe, expect, it } from 'vitest';
import { compile, match } from '../src/lib/router.js';

describe('router', () => {
  const routes = [compile('instances', '/instances'), compile('desktop', '/desktop/:sessionId')];

  it('matches paths and decodes parameters', () => {
    expect(match(routes, '/instances')).toMatchObject({ name: 'instances' });
    expect(match(routes, '/instances/')).toMatchObject({ name: 'instances' });
    expect(match(routes, '/desktop/ab%20c')).toMatchObject({
      name: 'desktop',
      params: { sessionId: 'ab c' },
    });
    expect(match(routes, '/desktop/a/b')).toBeNull();
    expect(match(routes, '/nope')).toBeNull();
  });
});
