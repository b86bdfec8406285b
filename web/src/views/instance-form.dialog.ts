// Add or edit an instance: address, SSH user, and a password or a private key (file upload, drag and
// drop or paste, with an optional passphrase). Credentials are write-only: editing shows that one is
// stored and replaces it only when a new one is given.
import { describeError, isApiError } from '../api/api-error.js';
import type { Instance, InstanceAuthInput, InstanceInput, InstancePatch } from '../api/types.js';
import type { AppContext } from '../app-context.js';
import { h, icon, uid } from '../lib/dom.js';
import { openDialog } from '../ui/dialog.js';
import { inspectPrivateKey } from './private-key.js';

const HOST = /^[A-Za-z0-9.:\-[\]]+$/;
const USERNAME = /^[A-Za-z0-9._][A-Za-z0-9._-]*$/;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

interface Field<E extends HTMLElement = HTMLInputElement> {
  wrapper: HTMLElement;
  input: E;
  setError(message: string | null): void;
}

function field<E extends HTMLInputElement | HTMLTextAreaElement>(
  label: string,
  input: E,
  hint = '',
): Field<E> {
  const id = input.id || uid('field');
  input.id = id;
  const messageId = `${id}-message`;
  input.setAttribute('aria-describedby', messageId);
  // The hint line doubles as the error line, so an error never pushes the form down.
  const message = h('p', { id: messageId, class: 'field-hint' }, hint);
  const wrapper = h('div', { class: 'field' }, h('label', { for: id }, label), input, message);
  return {
    wrapper,
    input,
    setError(text) {
      message.textContent = text ?? hint;
      message.classList.toggle('field-error', text !== null);
      if (text === null) input.removeAttribute('aria-invalid');
      else input.setAttribute('aria-invalid', 'true');
    },
  };
}

/** Resolves with the saved instance, or null if the person cancelled. */
export function openInstanceForm(ctx: AppContext, existing: Instance | null): Promise<Instance | null> {
  const editing = existing !== null;
  const name = field(
    'Name',
    h('input', {
      name: 'name',
      required: true,
      maxlength: 100,
      autocomplete: 'off',
      placeholder: 'e.g. dev-box',
    }),
  );
  const host = field(
    'Host',
    h('input', {
      name: 'host',
      required: true,
      maxlength: 253,
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: '203.0.113.10 or dev.example.com',
    }),
  );
  const port = field(
    'SSH port',
    h('input', { name: 'port', type: 'number', min: 1, max: 65535, inputmode: 'numeric' }),
  );
  const username = field(
    'SSH user',
    h('input', {
      name: 'username',
      required: true,
      maxlength: 64,
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: 'ubuntu',
    }),
  );
  port.input.value = '22';

  // Authentication: a segmented choice between password and private key.
  const authName = uid('auth');
  const authPassword = h('input', {
    type: 'radio',
    name: authName,
    value: 'password',
    id: `${authName}-password`,
  });
  const authKey = h('input', { type: 'radio', name: authName, value: 'privateKey', id: `${authName}-key` });
  const authChoice = h(
    'fieldset',
    { class: 'segmented' },
    h('legend', null, 'Authentication'),
    authKey,
    h('label', { for: authKey.id }, icon('key', 16), 'Private key'),
    authPassword,
    h('label', { for: authPassword.id }, 'Password'),
  );

  const keepHint = editing ? 'Leave empty to keep the stored one.' : '';
  const password = field(
    'Password',
    h('input', { name: 'ssh-password', type: 'password', maxlength: 1024, autocomplete: 'new-password' }),
    keepHint,
  );

  // Private key: a drop zone around a file input, or paste.
  let keyText = '';
  const keyFile = h('input', {
    type: 'file',
    class: 'visually-hidden',
    id: uid('key-file'),
    'data-testid': 'key-file',
  });
  const keyStatus = h(
    'span',
    { class: 'dropzone-status' },
    editing ? 'A key is stored. Choose a file to replace it.' : 'No file chosen',
  );
  const dropzone = h(
    'label',
    { class: 'dropzone', for: keyFile.id },
    icon('upload', 20),
    h('span', { class: 'dropzone-title' }, 'Choose a private key file'),
    h('span', { class: 'dropzone-sub' }, 'or drop it here — e.g. ~/.ssh/id_ed25519'),
    keyStatus,
  );
  const keyPaste = h('textarea', {
    id: uid('key-paste'),
    name: 'private-key',
    rows: 5,
    spellcheck: 'false',
    class: 'mono',
    placeholder: '-----BEGIN OPENSSH PRIVATE KEY-----',
  });
  const keyMessage = h(
    'p',
    { class: 'field-hint', id: uid('key-message') },
    'The key is encrypted at rest and never shown again.',
  );
  keyPaste.setAttribute('aria-describedby', keyMessage.id);
  keyFile.setAttribute('aria-describedby', keyMessage.id);
  const pasteToggle = h(
    'button',
    { type: 'button', class: 'btn btn-link btn-sm', 'aria-expanded': 'false' },
    'Paste the key instead',
  );
  const pasteWrap = h(
    'div',
    { class: 'paste-wrap', hidden: true },
    h('label', { for: keyPaste.id, class: 'visually-hidden' }, 'Private key text'),
    keyPaste,
  );
  const passphrase = field(
    'Passphrase',
    h('input', { name: 'passphrase', type: 'password', maxlength: 1024, autocomplete: 'off' }),
    'Only if the key is protected by one.',
  );
  const keyField = h(
    'div',
    { class: 'field' },
    h('span', { class: 'label' }, 'Private key'),
    dropzone,
    keyFile,
    h('div', { class: 'field-row' }, pasteToggle),
    pasteWrap,
    keyMessage,
  );
  const keyGroup = h('div', { class: 'auth-group' }, keyField, passphrase.wrapper);
  const passwordGroup = h('div', { class: 'auth-group' }, password.wrapper);

  const setKeyMessage = (text: string, tone: 'hint' | 'ok' | 'error') => {
    keyMessage.textContent = text;
    keyMessage.className =
      tone === 'error' ? 'field-hint field-error' : tone === 'ok' ? 'field-hint field-ok' : 'field-hint';
    // The drop zone's border says the same at a glance.
    dropzone.classList.toggle('has-file', tone === 'ok');
    dropzone.classList.toggle('has-error', tone === 'error');
    if (tone === 'error') keyMessage.scrollIntoView({ block: 'nearest' });
  };
  const acceptKey = (text: string, source: string) => {
    keyText = text;
    if (text.trim() === '') {
      setKeyMessage('The key is encrypted at rest and never shown again.', 'hint');
      return;
    }
    const info = inspectPrivateKey(text);
    if (!info.ok) {
      setKeyMessage(info.problem ?? 'This does not look like an SSH private key.', 'error');
      return;
    }
    setKeyMessage(
      `${source}: ${info.format} private key${info.encrypted ? ' — protected by a passphrase, enter it below' : ''}.`,
      'ok',
    );
    if (info.encrypted) passphrase.input.focus();
  };
  const readFile = (file: File) => {
    if (file.size > 16 * 1024) {
      keyText = '';
      keyStatus.textContent = file.name;
      setKeyMessage('This file is too large to be an SSH private key.', 'error');
      return;
    }
    file.text().then(
      (text) => {
        keyStatus.textContent = file.name;
        keyPaste.value = '';
        acceptKey(text, file.name);
      },
      () => setKeyMessage('The file could not be read.', 'error'),
    );
  };
  keyFile.addEventListener('change', () => {
    const file = keyFile.files?.[0];
    if (file) readFile(file);
  });
  dropzone.addEventListener('dragover', (event) => {
    event.preventDefault();
    dropzone.classList.add('is-dragging');
  });
  dropzone.addEventListener('dragleave', () => dropzone.classList.remove('is-dragging'));
  dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropzone.classList.remove('is-dragging');
    const file = event.dataTransfer?.files[0];
    if (file) readFile(file);
  });
  pasteToggle.addEventListener('click', () => {
    pasteWrap.hidden = !pasteWrap.hidden;
    pasteToggle.setAttribute('aria-expanded', String(!pasteWrap.hidden));
    if (!pasteWrap.hidden) keyPaste.focus();
  });
  keyPaste.addEventListener('input', () => {
    keyStatus.textContent = editing ? 'A key is stored. Choose a file to replace it.' : 'No file chosen';
    acceptKey(keyPaste.value, 'Pasted');
  });

  const showAuth = () => {
    const usesKey = authKey.checked;
    keyGroup.hidden = !usesKey;
    passwordGroup.hidden = usesKey;
  };
  authKey.addEventListener('change', showAuth);
  authPassword.addEventListener('change', showAuth);

  // Advanced: a fingerprint known in advance (pinned before the first connection).
  const fingerprint = field(
    'Expected host key fingerprint',
    h('input', {
      name: 'fingerprint',
      maxlength: 50,
      spellcheck: 'false',
      class: 'mono',
      placeholder: 'SHA256:…',
    }),
    'Optional. Otherwise you confirm it on the first connection test.',
  );
  const advanced = h('details', { class: 'advanced' }, h('summary', null, 'Advanced'), fingerprint.wrapper);

  if (existing) {
    name.input.value = existing.name;
    host.input.value = existing.host;
    port.input.value = String(existing.port);
    username.input.value = existing.username;
    fingerprint.input.value = existing.hostKeyFingerprint ?? '';
    (existing.auth.type === 'privateKey' ? authKey : authPassword).checked = true;
  } else {
    authKey.checked = true;
  }
  showAuth();

  const formError = h('p', { class: 'form-error', role: 'alert' });
  const submit = h(
    'button',
    { type: 'submit', class: 'btn btn-primary' },
    editing ? 'Save changes' : 'Add instance',
  );
  const cancel = h('button', { type: 'button', class: 'btn btn-secondary' }, 'Cancel');

  const form = h(
    'form',
    { class: 'form', novalidate: true },
    name.wrapper,
    h('div', { class: 'field-grid' }, host.wrapper, port.wrapper),
    username.wrapper,
    authChoice,
    keyGroup,
    passwordGroup,
    advanced,
    formError,
  );
  form.id = uid('instance-form');
  submit.setAttribute('form', form.id);

  const dialog = openDialog({
    title: editing ? `Edit ${existing.name}` : 'Add an instance',
    description: editing
      ? undefined
      : 'A machine you can reach over SSH, with a VNC server (TigerVNC) installed.',
    body: form,
  });
  dialog.footer.append(cancel, submit);
  cancel.addEventListener('click', () => dialog.close());
  name.input.focus();

  let saved: Instance | null = null;

  const collect = (): InstanceInput | InstancePatch | null => {
    const fields = [name, host, port, username, password, passphrase, fingerprint];
    fields.forEach((f) => f.setError(null));
    formError.textContent = '';
    // Every field that failed, in form order: focus goes to the first.
    const invalid: HTMLElement[] = [];
    const bad = (f: Field, message: string) => {
      f.setError(message);
      invalid.push(f.input);
    };
    const nameValue = name.input.value.trim();
    const hostValue = host.input.value.trim();
    const portValue = Number(port.input.value || '22');
    const userValue = username.input.value.trim();
    const fingerprintValue = fingerprint.input.value.trim();
    if (nameValue === '') bad(name, 'Give the instance a name.');
    if (hostValue === '') bad(host, 'Enter a host name or IP address.');
    else if (!HOST.test(hostValue))
      bad(host, 'Use a host name or an IP address (letters, digits, dots, colons).');
    if (!Number.isInteger(portValue) || portValue < 1 || portValue > 65535)
      bad(port, 'A port from 1 to 65535.');
    if (userValue === '') bad(username, 'Enter the SSH user name.');
    else if (!USERNAME.test(userValue)) bad(username, 'Letters, digits, dots, dashes and underscores only.');
    if (fingerprintValue !== '' && !FINGERPRINT.test(fingerprintValue)) {
      bad(fingerprint, 'Use the SHA256:… form printed by ssh-keygen -l.');
      advanced.open = true;
    }

    let auth: InstanceAuthInput | undefined;
    const typeChanged =
      existing !== null && existing.auth.type !== (authKey.checked ? 'privateKey' : 'password');
    if (authKey.checked) {
      const text = keyText.trim();
      if (text === '') {
        if (!editing || typeChanged) {
          setKeyMessage('Choose or paste the private key.', 'error');
          invalid.push(keyFile);
        }
      } else {
        const info = inspectPrivateKey(text);
        if (!info.ok) {
          setKeyMessage(info.problem ?? 'This does not look like an SSH private key.', 'error');
          invalid.push(keyFile);
        } else if (info.encrypted && passphrase.input.value === '') {
          bad(passphrase, 'This key is protected: enter its passphrase.');
        } else {
          auth = {
            type: 'privateKey',
            privateKey: `${text}\n`,
            ...(passphrase.input.value !== '' ? { passphrase: passphrase.input.value } : {}),
          };
        }
      }
    } else if (password.input.value === '') {
      if (!editing || typeChanged) bad(password, 'Enter the SSH password.');
    } else {
      auth = { type: 'password', password: password.input.value };
    }
    if (invalid.length > 0) {
      invalid[0]!.focus();
      return null;
    }

    if (!existing) {
      return {
        name: nameValue,
        host: hostValue,
        port: portValue,
        username: userValue,
        auth: auth!,
        ...(fingerprintValue !== '' ? { hostKeyFingerprint: fingerprintValue } : {}),
      };
    }
    const patch: InstancePatch = {};
    if (nameValue !== existing.name) patch.name = nameValue;
    if (hostValue !== existing.host) patch.host = hostValue;
    if (portValue !== existing.port) patch.port = portValue;
    if (userValue !== existing.username) patch.username = userValue;
    if (auth) patch.auth = auth;
    const currentFingerprint = existing.hostKeyFingerprint ?? '';
    if (fingerprintValue !== currentFingerprint)
      patch.hostKeyFingerprint = fingerprintValue === '' ? null : fingerprintValue;
    return patch;
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const body = collect();
    if (body === null) return;
    submit.disabled = true;
    submit.classList.add('is-busy');
    const call = existing
      ? ctx.api.updateInstance(existing.id, body)
      : ctx.api.createInstance(body as InstanceInput);
    call.then(
      (instance) => {
        saved = instance;
        dialog.close();
      },
      (e: unknown) => {
        submit.disabled = false;
        submit.classList.remove('is-busy');
        if (isApiError(e)) {
          switch (e.code) {
            case 'INSTANCE_ADDRESS_FORBIDDEN':
            case 'INSTANCE_HOST_UNRESOLVABLE':
              host.setError(e.message);
              host.input.focus();
              return;
            case 'INVALID_PRIVATE_KEY':
              setKeyMessage('The key cannot be read: wrong format or wrong passphrase.', 'error');
              passphrase.input.focus();
              return;
            default:
              break;
          }
        }
        formError.textContent = describeError(e);
      },
    );
  });

  return dialog.closed.then(() => saved);
}
