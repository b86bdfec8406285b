// The open-file limit the gateway warns about at start (one descriptor per viewer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OPEN_FILES_WANTED, openFilesLimit, parseOpenFilesLimit } from '../src/lib/open-files.js';

const limits = (soft: string, hard: string) =>
  [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    'Max processes             96363                96363                processes ',
    `Max open files            ${soft.padEnd(21)}${hard.padEnd(21)}files     `,
    'Max locked memory         8388608              8388608              bytes     ',
  ].join('\n');

test('the soft open-file limit is read from /proc/<pid>/limits', () => {
  assert.equal(parseOpenFilesLimit(limits('1024', '524288')), 1024);
  assert.equal(parseOpenFilesLimit(limits('65536', '65536')), 65536);
  assert.equal(parseOpenFilesLimit(limits('unlimited', 'unlimited')), null);
  assert.equal(parseOpenFilesLimit('Max processes 10 10 processes'), null);
  assert.equal(
    openFilesLimit(() => limits('20000', '20000')),
    20000,
  );
  assert.equal(
    openFilesLimit(() => {
      throw new Error('ENOENT');
    }),
    null,
  );
});

test('this process has a limit, and 1024 is below what a gateway wants', () => {
  const own = openFilesLimit();
  assert.ok(own === null || own > 0);
  assert.ok(1024 < OPEN_FILES_WANTED && OPEN_FILES_WANTED <= 65_536);
});
