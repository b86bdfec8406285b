// The desktop viewer page: a compact toolbar (scaling, quality, view only, keys, clipboard, full
// screen, end session), the desktop filling the rest of the window, a one-line status bar (state,
// size, round trip, kbit/s) and overlays for connecting, reconnecting, ended and failed — drawn over
// the desktop so nothing around it moves. Every toolbar action hands the keyboard back to the desktop
// (issue 14 point 9). In full screen the toolbar and status bar hide until the pointer reaches the top
// edge.
import { describeError } from '../api/api-error.js';
import type { AppContext, View } from '../app-context.js';
import { h, icon, uid } from '../lib/dom.js';
import { desktopLabel, formatRate, formatRtt } from '../lib/format.js';
import type { Scaling } from '../lib/prefs.js';
import { confirmDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';
import { DesktopConnection, type LinkStats, type ViewerState } from '../viewer/desktop-connection.js';
import { keyCombos } from '../viewer/key-combos.js';
import { isQualityName, qualityMenu } from '../viewer/quality.js';
import { progressSteps } from './progress-steps.js';
import { filesPanel } from './files.panel.js';
import { shareDialog } from './share.dialog.js';
import type { ShareMode } from '../api/types.js';

const SCALING: Array<{ value: Scaling; label: string; title: string }> = [
  { value: 'remote', label: 'Resize', title: 'Resize the remote desktop to this window (sharp text)' },
  { value: 'fit', label: 'Fit', title: 'Scale the desktop to fit the window' },
  { value: 'native', label: '1:1', title: 'Actual pixels, scroll if larger than the window' },
];

/** A share's guest: whose desktop, the share's mode, and where fresh tickets come from. */
export interface GuestAccess {
  ownerName: string;
  mode: ShareMode;
  websocketUrl: string;
  ticket(): Promise<{ websocketUrl: string }>;
}

export function desktopView(ctx: AppContext, sessionId: string, guest?: GuestAccess): View {
  const pending = guest ? undefined : ctx.pendingConnects.get(sessionId);
  ctx.pendingConnects.delete(sessionId);
  // The session's instance (for the Files panel) and, after a reload, its labels. A guest has neither.
  const sessionInfo = guest
    ? Promise.resolve(null)
    : ctx.api.activeSessions().then(
        (list) => list.find((x) => x.id === sessionId) ?? null,
        () => null,
      );
  const files = filesPanel(
    ctx,
    sessionInfo.then((s) => s?.instanceId ?? null),
  );
  // A view-only guest sends no input (and the gateway would drop it anyway: it enforces the share's mode).
  let viewOnly = guest?.mode === 'view';

  // ---- toolbar ----
  const title = h(
    'span',
    { class: 'viewer-title-name' },
    guest ? `${guest.ownerName}’s desktop` : (pending?.instanceName ?? 'Desktop'),
  );
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
      connection.focus();
    });
    scaling.append(
      input,
      h('label', { for: id, title: option.title, 'data-testid': `scaling-${option.value}` }, option.label),
    );
  }

  const qualityId = uid('quality');
  const quality = h('select', { id: qualityId, class: 'select select-dark', 'data-testid': 'quality' });
  for (const preset of qualityMenu) {
    const option = h('option', { value: preset.name, title: preset.hint }, preset.label);
    option.selected = ctx.prefs.quality === preset.name;
    quality.append(option);
  }
  if (!qualityMenu.some((p) => p.name === ctx.prefs.quality)) {
    // A preset set outside the menu (the bandwidth benchmark's "novnc"): shown, not offered.
    const option = h('option', { value: ctx.prefs.quality, hidden: true }, ctx.prefs.quality);
    option.selected = true;
    quality.append(option);
  }
  quality.addEventListener('change', () => {
    if (!isQualityName(quality.value)) return;
    ctx.prefs.quality = quality.value;
    ctx.savePrefs();
    connection.setQuality(quality.value);
    connection.focus();
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
  if (guest?.mode === 'view') {
    viewOnlyButton.disabled = true;
    viewOnlyButton.setAttribute('aria-pressed', 'true');
    viewOnlyButton.title = 'This share lets you watch only';
  }
  viewOnlyButton.addEventListener('click', () => {
    viewOnly = !viewOnly;
    viewOnlyButton.setAttribute('aria-pressed', String(viewOnly));
    connection.setViewOnly(viewOnly);
    root.classList.toggle('is-view-only', viewOnly);
    viewOnlyBadge.hidden = !viewOnly;
    if (connection.connected) stateText.textContent = connectedText();
    connection.focus();
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
    {
      type: 'button',
      class: 'btn btn-secondary btn-sm',
      'data-testid': 'clipboard-send',
      title: 'Put the text on the desktop’s clipboard, to paste it there',
    },
    'Send to clipboard',
  );
  const typeClipboard = h(
    'button',
    {
      type: 'button',
      class: 'btn btn-primary btn-sm',
      'data-testid': 'clipboard-type',
      title: 'Type the text into the focused program, key by key (works where pasting does not)',
    },
    icon('keyboard', 16),
    'Type it',
  );
  const copyLocal = h('button', { type: 'button', class: 'btn btn-secondary btn-sm' }, 'Copy');
  const clipboardStatus = h('p', {
    class: 'field-hint',
    'aria-live': 'polite',
    'data-testid': 'clipboard-status',
  });
  sendClipboard.addEventListener('click', () => {
    const ok = connection.pasteToDesktop(clipboardText.value);
    clipboardStatus.textContent = ok ? PASTE_HINT : 'Not connected (or view only).';
    if (ok) {
      clipboardMenu.open = false;
      toast(PASTE_HINT, 'info', 8000);
      connection.focus();
    }
  });
  typeClipboard.addEventListener('click', () => {
    const result = connection.typeText(clipboardText.value);
    clipboardStatus.textContent =
      result === 'typing'
        ? 'Typed into the program that has the keyboard on the desktop.'
        : result === 'too-long'
          ? 'That is too long to type (at most 10,000 characters). Send it to the clipboard instead.'
          : 'Not connected (or view only).';
    if (result === 'typing') clipboardMenu.open = false;
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
  const clipboardBadge = h('span', {
    class: 'toolbar-badge',
    hidden: true,
    'data-testid': 'clipboard-badge',
    'aria-label': 'new text from the desktop',
  });
  clipboardMenu.addEventListener('toggle', () => {
    if (clipboardMenu.open) clipboardBadge.hidden = true;
  });
  clipboardMenu.append(
    h(
      'summary',
      { class: 'btn btn-toolbar', title: 'Clipboard', 'data-testid': 'clipboard-menu' },
      icon('clipboard', 16),
      h('span', { class: 'toolbar-label' }, 'Clipboard'),
      clipboardBadge,
    ),
    h(
      'div',
      { class: 'menu-panel clipboard-panel' },
      h('label', { for: clipboardText.id, class: 'label' }, 'Clipboard'),
      clipboardText,
      h('div', { class: 'menu-actions' }, copyLocal, sendClipboard, typeClipboard),
      clipboardStatus,
    ),
  );

  const fullscreen = h(
    'button',
    { type: 'button', class: 'btn btn-toolbar', title: 'Full screen', 'aria-pressed': 'false' },
    icon('maximize', 16),
    h('span', { class: 'toolbar-label' }, 'Full screen'),
  );
  fullscreen.setAttribute('data-testid', 'fullscreen');
  fullscreen.addEventListener('click', () => toggleFullscreen(root));
  const onFullscreenChange = () => {
    const on = document.fullscreenElement === root;
    root.classList.toggle('is-fullscreen', on);
    root.classList.remove('reveal-chrome');
    fullscreen.setAttribute('aria-pressed', String(on));
    fullscreen.replaceChildren(
      icon(on ? 'minimize' : 'maximize', 16),
      h('span', { class: 'toolbar-label' }, on ? 'Exit full screen' : 'Full screen'),
    );
    if (on) void lockKeyboard();
    connection.focus();
  };
  document.addEventListener('fullscreenchange', onFullscreenChange);
  // Full screen: the toolbar and status bar come back while the pointer is at the top edge or over them.
  const REVEAL_EDGE_PX = 4;
  const onPointerMove = (event: PointerEvent) => {
    if (!root.classList.contains('is-fullscreen')) return;
    const overChrome = toolbar.contains(event.target as Node) || status.contains(event.target as Node);
    if (event.clientY <= REVEAL_EDGE_PX) root.classList.add('reveal-chrome');
    else if (!overChrome && !keysMenu.open && !clipboardMenu.open) root.classList.remove('reveal-chrome');
  };
  document.addEventListener('pointermove', onPointerMove);

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

  const filesButton = h(
    'button',
    {
      type: 'button',
      class: 'btn btn-toolbar',
      'aria-pressed': 'false',
      'data-testid': 'files-toggle',
      title: 'Files on the instance: browse, download, upload (or drop files onto the desktop)',
    },
    icon('upload', 16),
    h('span', { class: 'toolbar-label' }, 'Files'),
  );
  filesButton.addEventListener('click', () => {
    filesButton.setAttribute('aria-pressed', String(files.toggle()));
  });

  const shareButton = h(
    'button',
    {
      type: 'button',
      class: 'btn btn-toolbar',
      'data-testid': 'share',
      title: 'Share this desktop: a link for someone to watch or to take control',
    },
    icon('link', 16),
    h('span', { class: 'toolbar-label' }, 'Share'),
  );
  shareButton.addEventListener('click', () => {
    void shareDialog(ctx, sessionId).then(() => connection.focus());
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
      guest ? null : shareButton,
      guest ? null : filesButton,
      fullscreen,
      guest ? null : endButton,
    ),
  );
  const guestBanner = guest
    ? h(
        'div',
        { class: 'viewer-guest-banner', role: 'status', 'data-testid': 'guest-banner' },
        icon('eye', 14),
        `Viewing ${guest.ownerName}’s desktop${guest.mode === 'view' ? ' (view only)' : ' (you can control it)'}`,
      )
    : null;

  // Close the open menu when clicking elsewhere (details elements do not do it themselves).
  const closeMenus = (event: Event) => {
    for (const menu of [keysMenu, clipboardMenu]) {
      if (menu.open && !menu.contains(event.target as Node)) menu.open = false;
    }
    if (target.contains(event.target as Node)) root.classList.remove('reveal-chrome');
  };
  document.addEventListener('pointerdown', closeMenus);

  // ---- desktop area ----
  const target = h('div', { class: 'viewer-screen', 'data-testid': 'screen' });
  const ghost = h('div', { class: 'viewer-ghost', 'aria-hidden': 'true' });
  const overlay = h('div', { class: 'viewer-overlay', hidden: true });
  const viewOnlyBadge = h(
    'div',
    { class: 'viewer-badge', hidden: true, 'data-testid': 'view-only-badge' },
    icon('eye', 14),
    'View only — your keyboard and mouse are not sent',
  );
  const hint = h('div', { class: 'viewer-hint', hidden: true, 'data-testid': 'desktop-hint' });
  const dropHint = h(
    'div',
    { class: 'viewer-drop', hidden: true, 'aria-hidden': 'true' },
    'Drop to upload into the folder shown in Files',
  );
  const stage = h(
    'div',
    { class: 'viewer-stage', 'data-testid': 'stage' },
    ghost,
    target,
    overlay,
    viewOnlyBadge,
    hint,
    dropHint,
  );
  // Files dragged onto the desktop upload into the Files panel's folder (the home folder at first).
  const carriesFiles = (e: DragEvent) => e.dataTransfer?.types.includes('Files') ?? false;
  stage.addEventListener(
    'dragover',
    (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      e.stopPropagation();
      if (e.dataTransfer) e.dataTransfer.dropEffect = 'copy';
      dropHint.hidden = false;
    },
    true,
  );
  stage.addEventListener('dragleave', (e) => {
    if (e.target === stage || !stage.contains(e.relatedTarget as Node | null)) dropHint.hidden = true;
  });
  stage.addEventListener(
    'drop',
    (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      e.stopPropagation();
      dropHint.hidden = true;
      const dropped = [...(e.dataTransfer?.files ?? [])];
      if (dropped.length === 0) return;
      filesButton.setAttribute('aria-pressed', String(files.toggle(true)));
      files.upload(dropped);
    },
    true,
  );
  const body = h('div', { class: 'viewer-body' }, stage, files.element);

  // ---- status line ----
  const stateText = h('span', { class: 'status-state', 'data-testid': 'viewer-status' }, 'Connecting…');
  const stateDot = h('span', { class: 'dot', 'aria-hidden': 'true' });
  const sizeText = h('span', { class: 'status-item' });
  const rttText = h('span', { class: 'status-item', 'data-testid': 'rtt' }, 'RTT —');
  const rateText = h('span', { class: 'status-item', 'data-testid': 'rate' }, '↓ — ↑ —');
  const autoText = h('span', {
    class: 'status-item',
    'data-testid': 'auto-quality',
    title: 'What the Automatic preset picked from the measured throughput',
  });
  const status = h(
    'footer',
    { class: 'viewer-status' },
    h('span', { class: 'status-live', role: 'status', 'aria-live': 'polite' }, stateDot, stateText),
    h('span', { class: 'status-spacer' }),
    autoText,
    sizeText,
    h('span', { title: 'Round trip to the desktop' }, rttText),
    h('span', { title: 'Current throughput: from the desktop ↓, to the desktop ↑' }, rateText),
  );

  const root = h(
    'div',
    { class: 'viewer', 'data-state': 'connecting', 'data-testid': 'viewer' },
    toolbar,
    guestBanner,
    body,
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
        stateText.textContent = connectedText();
        steps.set(2, 'done');
        showOverlay(null);
        maybeShowHint();
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
            text: guest
              ? 'You are no longer watching this desktop. Ask its owner for a new link to watch again.'
              : 'The desktop was closed — by you, in another window, or after it sat idle. Connect again to start a new one.',
            testid: 'overlay-ended',
            actions: [instances],
          }),
        );
        instances.focus();
        break;
      }
      case 'signed-out':
        stateText.textContent = 'Signed out';
        // Signed out everywhere or disabled by an admin: this tab's sign-in is over too, or the sign-in
        // page would send a still-"signed-in" shell straight back to the instances.
        ctx.api.forget();
        ctx.user = null;
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

  const connectedText = () => (viewOnly ? 'Connected · view only' : 'Connected');

  let paused = false;
  const renderStats = (stats: LinkStats) => {
    sizeText.textContent = stats.width > 0 ? `${stats.width}×${stats.height}` : '';
    rttText.textContent = `RTT ${formatRtt(stats.rttMs)}`;
    rateText.textContent = `↓ ${formatRate(stats.downBitsPerSecond)} ↑ ${formatRate(stats.upBitsPerSecond)}`;
    autoText.textContent = stats.automatic ? `Automatic: quality ${stats.automatic.qualityLevel}` : '';
    root.dataset.updates = stats.paused ? 'paused' : 'live';
    if (stats.paused !== paused) {
      paused = stats.paused;
      if (connection.connected)
        stateText.textContent = paused ? 'Paused while this tab is hidden' : connectedText();
    }
  };

  // One-time hints for a desktop that opens without any (openbox is a bare screen: issue 14 point 8).
  let desktopEnvironment = pending?.desktopEnvironment ?? null;
  const maybeShowHint = () => {
    if (desktopEnvironment !== 'openbox' || ctx.prefs.hintsShown.includes('openbox-menu')) return;
    if (!connection.connected || !hint.hidden) return;
    const gotIt = h('button', { type: 'button', class: 'btn btn-secondary btn-sm' }, 'Got it');
    const seen = () => {
      hint.hidden = true;
      if (!ctx.prefs.hintsShown.includes('openbox-menu')) ctx.prefs.hintsShown.push('openbox-menu');
      ctx.savePrefs();
      target.removeEventListener('contextmenu', seen);
    };
    gotIt.addEventListener('click', () => {
      seen();
      connection.focus();
    });
    // A right-click into the desktop is the hint followed: it need not show again.
    target.addEventListener('contextmenu', seen);
    hint.replaceChildren(
      h(
        'p',
        null,
        h('strong', null, 'Openbox: '),
        'right-click the desktop to open its menu (terminal, programs, log out).',
      ),
      gotIt,
    );
    hint.hidden = false;
  };

  const connection = new DesktopConnection({
    target,
    ghost,
    sessionId,
    tickets: guest ? { ticket: () => guest.ticket() } : ctx.api,
    // A guest must not resize the owner's desktop (a view-only guest's resize is dropped at the gateway).
    settings: {
      scaling: guest && ctx.prefs.scaling === 'remote' ? 'fit' : ctx.prefs.scaling,
      quality: ctx.prefs.quality,
      viewOnly,
    },
    onState: render,
    onStats: renderStats,
    onClipboard: (text) => {
      clipboardText.value = text;
      const chars = `${text.length} character${text.length === 1 ? '' : 's'}`;
      clipboardStatus.textContent = `Received ${chars} from the desktop.`;
      if (!clipboardMenu.open) clipboardBadge.hidden = false;
      // Straight into the local clipboard when the browser allows it (focused page, secure context).
      const local = navigator.clipboard?.writeText(text);
      if (!local) toast(`The desktop copied ${chars}: it is in the Clipboard panel.`, 'info');
      else
        local.then(
          () => toast(`The desktop copied ${chars}: also on this computer’s clipboard now.`, 'info'),
          () => toast(`The desktop copied ${chars}: it is in the Clipboard panel.`, 'info'),
        );
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
  connection.start(guest?.websocketUrl ?? pending?.websocketUrl);
  if (viewOnly) {
    root.classList.add('is-view-only');
    viewOnlyBadge.hidden = false;
  }

  // Labels for a reloaded page (the connect dialog's hand-off is gone then).
  if (!pending) {
    sessionInfo.then(
      (s) => {
        if (!s) return;
        desktopEnvironment = s.desktopEnvironment;
        maybeShowHint();
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
      document.removeEventListener('pointermove', onPointerMove);
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

/** Where pasting works on the desktop: TigerVNC puts the text on both the clipboard and the primary selection. */
const PASTE_HINT =
  'On the desktop’s clipboard now. Paste with Shift+Insert or a middle click in xterm, Ctrl+Shift+V in most other terminals, Ctrl+V elsewhere.';
