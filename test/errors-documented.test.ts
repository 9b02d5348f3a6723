import { test } from 'tap'
import { readFileSync } from 'node:fs'
import * as errors from '../lib/errors.js'

test('every error code is documented in README.md, with its status', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  t.ok(errors.errorCodes.length >= 9)
  for (const code of errors.errorCodes) {
    const ErrorClass = (errors as unknown as Record<string, new (...args: unknown[]) => Error & { statusCode: number, code: string }>)[code]
    const instance = new ErrorClass('x', 'y')
    t.equal(instance.code, code)
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${code}\``))
    t.ok(row, `${code} has a row in the README error table`)
    t.match(row ?? '', `| ${instance.statusCode} |`, `${code} row gives status ${instance.statusCode}`)
  }
  const documented = [...readme.matchAll(/\| `(FST_AUTHZ_\w+)`/g)].map((m) => m[1])
  t.same(documented.filter((c) => !(errors.errorCodes as readonly string[]).includes(c)), [], 'no stale codes in the README')
})
