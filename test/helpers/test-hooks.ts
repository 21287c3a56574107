/**
 * Tests and benchmarks only: the addon with its test hooks (noop, spin, the optimizer self-test),
 * which only the development build has (CMakeLists.txt's FL_TEST_HOOKS; the shipped addon lacks
 * them). Checks they are there instead of casting blindly.
 */
import { addon, addonPath } from '../../lib/binding/native';
import { TEST_HOOK_EXPORTS, type Addon, type TestHooks } from '../../lib/binding/addon-types';

export function testAddon(): Addon & TestHooks {
  const a = addon();
  const missing = TEST_HOOK_EXPORTS.filter((k) => typeof (a as unknown as Record<string, unknown>)[k] !== 'function');
  if (missing.length > 0) {
    throw new Error(`the loaded addon (${addonPath()}) lacks the test hooks ${missing.join(', ')}: ` +
      'tests and benchmarks that need them run on the development build (cmake, FL_TEST_HOOKS)');
  }
  return a as Addon & TestHooks;
}
