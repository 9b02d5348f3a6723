import { test } from 'tap'
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { runPerf } from '../examples/perf.js'

test('runPerf prints the seed lines and returns whether every target was met', async (t) => {
  const lines: string[] = []
  const ok = await runPerf({ config: 'development', iterations: 600, latencyMs: 0, concurrency: 4 }, (line) => lines.push(line))
  const text = lines.join('\n')
  t.match(text, /^fastify-authz-cache perf: preset development, 600 checks, 4 concurrent views, SIMULATED backend latency 0 ms/)
  t.match(text, /(✅|❌) Average response time: [0-9.]+ ms per check \(target <= 5 ms\)/)
  t.match(text, /(✅|❌) Cache hit rate: [0-9.]+% \(target >= 95%\)/)
  t.match(text, '0 of 600 checks did not answer 200', 'every check of the workload is one the SQL rules grant')
  t.equal(lines.at(-1), ok ? '✅ All performance targets met' : '❌ Some performance targets were missed')
  const marks = lines.filter((l) => /^(✅|❌) (Average|Cache hit)/.test(l))
  t.equal(marks.length, 2)
  t.equal(ok, marks.every((l) => l.startsWith('✅')), 'the verdict follows the lines')
})

const bin = fileURLToPath(new URL('../dist/lib/bin/authz-cache.js', import.meta.url))
test('the authz-cache bin runs perf and answers with its exit code', { skip: existsSync(bin) ? false : 'not built: npm test builds before the unit tests' }, async (t) => {
  const run = spawnSync(process.execPath, [bin, 'perf', '--iterations', '300', '--latency-ms', '0', '--concurrency', '2', '--config', 'development'], { encoding: 'utf8', timeout: 120_000 })
  t.ok(run.status === 0 || run.status === 1, `exit ${run.status}: ${run.stderr}`)
  t.equal(run.status === 0, run.stdout.includes('✅ All performance targets met'))
  const bad = spawnSync(process.execPath, [bin, 'perf', '--iterations', 'lots'], { encoding: 'utf8' })
  t.equal(bad.status, 2)
  t.match(bad.stderr, '--iterations must be an integer')
  t.match(bad.stderr, 'usage: authz-cache perf')
})
