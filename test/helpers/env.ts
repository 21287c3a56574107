/** Sets an environment variable back to a saved value (undefined: unset), for tests' teardowns. */
export function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
