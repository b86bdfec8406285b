// Assertions shared by the test files.
import assert from 'node:assert/strict';
import { AppError } from '../../src/errors/errors.js';

/** Awaits `promise` and asserts it rejected with an AppError of `code`; returns that error. */
export async function rejectsWith(promise: Promise<unknown>, code: string): Promise<AppError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof AppError, `expected an AppError, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${code}, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}
