import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { InputError } from '../errors.js';

const require = createRequire(import.meta.url);

/**
 * The corpus used when training is given no data: the unminified source of lodash (`lodash/lodash.js`
 * from the installed dependency), about 540 KB of real, well-commented JavaScript. Small enough for a
 * laptop, long enough (one file of ~546K bytes, ~143K cl100k tokens) for long-context training.
 */
export function defaultCorpusPath(): string {
  try {
    return require.resolve('lodash/lodash.js');
  } catch {
    throw new InputError('the default corpus (the lodash package) is not installed; pass a data path');
  }
}

/** One line saying what the default corpus is, for logs and --help. */
export function defaultCorpusDescription(): string {
  const path = defaultCorpusPath();
  let version = '';
  try {
    const pkg = JSON.parse(readFileSync(require.resolve('lodash/package.json'), 'utf8')) as { version: string };
    version = ` ${pkg.version}`;
  } catch {
    // the version is a courtesy
  }
  const kb = Math.round(statSync(path).size / 1000);
  return `lodash${version} source (lodash.js, ${kb} KB of JavaScript)`;
}
