// The Files panel beside the desktop (issue 12): browse the instance's folders over SFTP, download by
// a link the browser's own download manager streams to disk (never built in memory), make a folder,
// rename, delete, and uploads — dropped onto the desktop or picked here — into the folder shown, each with
// its own progress bar and cancel button.
import { ApiError, describeError } from '../api/api-error.js';
import type { AppContext } from '../app-context.js';
import type { FileEntry, FileListing } from '../api/types.js';
import { h, icon } from '../lib/dom.js';
import { formatBytes } from '../lib/format.js';
import { confirmDialog } from '../ui/dialog.js';
import { toast } from '../ui/toast.js';

export interface FilesPanel {
  element: HTMLElement;
  /** Shows or hides the panel; returns whether it is shown. */
  toggle(show?: boolean): boolean;
  /** Uploads into the folder the panel shows (the home folder until another is opened). */
  upload(files: File[]): void;
}

const isFolder = (e: FileEntry) => e.type === 'directory' || e.targetType === 'directory';

function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

export function filesPanel(ctx: AppContext, instanceId: Promise<string | null>): FilesPanel {
  let current: FileListing | null = null;
  let loading: Promise<void> | null = null;

  const pathText = h('span', { class: 'files-path', 'data-testid': 'files-path' }, '…');
  const list = h('ul', { class: 'files-list', 'data-testid': 'files-list' });
  const uploads = h('ul', { class: 'files-uploads', 'data-testid': 'files-uploads' });
  const picker = h('input', { type: 'file', multiple: true, hidden: true });
  const button = (label: string, title: string, testid: string, onclick: () => void, ...children: Node[]) =>
    h(
      'button',
      { type: 'button', class: 'btn btn-toolbar btn-sm', title, 'data-testid': testid, onclick },
      ...children,
      h('span', { class: 'toolbar-label' }, label),
    );
  const up = button('Up', 'The folder above', 'files-up', () => {
    if (current?.parent) void open(current.parent);
  });
  const actions = h(
    'div',
    { class: 'files-actions' },
    up,
    button('Refresh', 'List the folder again', 'files-refresh', () => void open(current?.path)),
    button('New folder', 'Make a folder here', 'files-mkdir', () => void makeFolder(), icon('plus', 14)),
    button(
      'Upload',
      'Upload files into this folder',
      'files-upload',
      () => picker.click(),
      icon('upload', 14),
    ),
  );
  picker.addEventListener('change', () => {
    upload([...(picker.files ?? [])]);
    picker.value = '';
  });

  const element = h(
    'aside',
    {
      class: 'files-panel',
      hidden: true,
      'aria-label': 'Files on the instance',
      'data-testid': 'files-panel',
    },
    h('header', { class: 'files-header' }, h('h2', { class: 'files-title' }, 'Files'), pathText),
    actions,
    list,
    uploads,
    h('p', { class: 'files-hint' }, 'Drop files onto the desktop to upload them into this folder.'),
    picker,
  );

  const withId = async <T>(fn: (id: string) => Promise<T>): Promise<T | null> => {
    const id = await instanceId;
    if (id === null) {
      toast('This desktop’s instance is not known; files are unavailable.', 'error');
      return null;
    }
    return fn(id);
  };

  /** Lists a folder; a call while one is loading waits for that one instead. */
  function open(path?: string): Promise<void> {
    loading ??= (async () => {
      try {
        const listing = await withId((id) => ctx.api.listFiles(id, path));
        if (listing) {
          current = listing;
          render();
        }
      } catch (e) {
        toast(describeError(e), 'error');
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function render(): void {
    if (!current) return;
    pathText.textContent = current.path;
    pathText.title = current.path;
    up.disabled = current.parent === null;
    const rows = current.entries.map((entry) => row(entry));
    if (rows.length === 0) rows.push(h('li', { class: 'files-empty' }, 'This folder is empty.'));
    if (current.truncated) rows.push(h('li', { class: 'files-empty' }, 'Only the first entries are shown.'));
    list.replaceChildren(...rows);
  }

  function row(entry: FileEntry): HTMLElement {
    const folder = isFolder(entry);
    const name = h(
      'button',
      {
        type: 'button',
        class: 'files-name',
        title: folder ? `Open ${entry.name}` : `Download ${entry.name}`,
        'data-testid': 'files-entry',
        'data-name': entry.name,
      },
      h('span', { class: 'files-icon', 'aria-hidden': 'true' }, folder ? '📁' : '📄'),
      entry.name,
    );
    name.addEventListener('click', () => (folder ? void open(entry.path) : void download(entry)));
    const rename = h(
      'button',
      {
        type: 'button',
        class: 'btn btn-ghost btn-icon btn-sm',
        title: `Rename ${entry.name}`,
        'aria-label': `Rename ${entry.name}`,
      },
      icon('edit', 14),
    );
    rename.addEventListener('click', () => void renameEntry(entry));
    const remove = h(
      'button',
      {
        type: 'button',
        class: 'btn btn-ghost btn-icon btn-sm',
        title: `Delete ${entry.name}`,
        'aria-label': `Delete ${entry.name}`,
      },
      icon('trash', 14),
    );
    remove.addEventListener('click', () => void deleteEntry(entry));
    return h(
      'li',
      { class: 'files-row' },
      name,
      h('span', { class: 'files-size' }, folder ? '' : formatBytes(entry.size)),
      rename,
      remove,
    );
  }

  async function download(entry: FileEntry): Promise<void> {
    try {
      const link = await withId((id) => ctx.api.fileDownloadLink(id, entry.path));
      if (!link) return;
      // A navigation the server answers with Content-Disposition: attachment — the browser saves it
      // straight to disk; the page stays.
      const a = h('a', { href: link.url, download: entry.name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) {
      toast(describeError(e), 'error');
    }
  }

  async function makeFolder(): Promise<void> {
    if (!current) return;
    const name = window.prompt('Name of the new folder');
    if (!name) return;
    try {
      await withId((id) => ctx.api.makeFolder(id, joinPath(current!.path, name)));
      await open(current.path);
    } catch (e) {
      toast(describeError(e), 'error');
    }
  }

  async function renameEntry(entry: FileEntry): Promise<void> {
    const name = window.prompt(`Rename ${entry.name} to`, entry.name);
    if (!name || name === entry.name || !current) return;
    try {
      await withId((id) => ctx.api.renameFile(id, entry.path, joinPath(current!.path, name)));
      await open(current.path);
    } catch (e) {
      toast(describeError(e), 'error');
    }
  }

  async function deleteEntry(entry: FileEntry): Promise<void> {
    const ok = await confirmDialog({
      title: `Delete ${entry.name}?`,
      message: isFolder(entry)
        ? 'Only an empty folder can be deleted.'
        : 'The file is deleted on the instance.',
      confirmLabel: 'Delete',
      danger: true,
    });
    if (!ok || !current) return;
    try {
      await withId((id) => ctx.api.deleteFile(id, entry.path));
      await open(current.path);
    } catch (e) {
      toast(describeError(e), 'error');
    }
  }

  function upload(files: File[]): void {
    for (const file of files) void uploadOne(file);
  }

  async function uploadOne(file: File): Promise<void> {
    if (!current) await open();
    const folder = current?.path;
    if (folder === undefined) return;
    const controller = new AbortController();
    const bar = h('progress', { max: file.size || 1, value: 0, 'aria-label': `Uploading ${file.name}` });
    const state = h('span', { class: 'files-upload-state' }, 'Starting…');
    const cancel = h(
      'button',
      { type: 'button', class: 'btn btn-ghost btn-sm', 'data-testid': 'files-upload-cancel' },
      'Cancel',
    );
    cancel.addEventListener('click', () => controller.abort());
    const item = h(
      'li',
      { class: 'files-upload', 'data-testid': 'files-upload-item', 'data-name': file.name },
      h('span', { class: 'files-upload-name' }, file.name),
      bar,
      state,
      cancel,
    );
    uploads.append(item);
    const path = joinPath(folder, file.name);
    const send = (overwrite: boolean) =>
      withId((id) =>
        ctx.api.uploadFile(id, path, file, {
          overwrite,
          signal: controller.signal,
          onProgress: (sent, total) => {
            bar.max = total || 1;
            bar.value = sent;
            state.textContent = `${formatBytes(sent)} of ${formatBytes(total)}`;
          },
        }),
      );
    try {
      try {
        await send(false);
      } catch (e) {
        if (!(e instanceof ApiError) || e.code !== 'FILE_EXISTS') throw e;
        const replace = await confirmDialog({
          title: `Replace ${file.name}?`,
          message: `${folder} already has ${file.name}.`,
          confirmLabel: 'Replace',
        });
        if (!replace) throw new ApiError(0, 'CANCELLED', 'Upload cancelled');
        await send(true);
      }
      item.dataset.state = 'done';
      state.textContent = 'Uploaded';
      cancel.remove();
      setTimeout(() => item.remove(), 4000);
      if (current?.path === folder) await open(folder);
    } catch (e) {
      const cancelled = e instanceof ApiError && e.code === 'CANCELLED';
      item.dataset.state = cancelled ? 'cancelled' : 'failed';
      state.textContent = cancelled ? 'Cancelled' : describeError(e);
      cancel.textContent = 'Dismiss';
      cancel.onclick = () => item.remove();
    }
  }

  return {
    element,
    toggle(show) {
      const visible = show ?? element.hidden;
      element.hidden = !visible;
      if (visible && !current) void open();
      return visible;
    },
    upload,
  };
}
