import { test } from 'tap'
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { measure, runPerf, WORKLOADS } from '../examples/perf.js'

test('runPerf prints the seed lines and returns whether every target was met', async (t) => {
  const lines: string[] = []
  const ok = await runPerf({ config: 'development', iterations: 600, latencyMs: 0, concurrency: 4, thinkMs: 0 }, (line) => lines.push(line))
  const text = lines.join('\n')
  t.match(text, /^fastify-authz-cache perf: preset development, 600 checks measured after 600 of warm-up, 4 concurrent sessions, SIMULATED backend latency 0 ms/)
  t.match(text, /workload projects: 5000 users, 100 teams, 300 projects, 20000 generations/)
  t.match(text, /decisions looked up: \d+, of which \d+ on a resource no user was checked on before \(the best hit rate possible: [0-9.]+%\)/)
  t.match(text, /backend calls: \d+; predictive warming: \d+ predicted, \d+ used, \d+ wasted/)
  t.match(text, /(✅|❌) Average response time: [0-9.]+ ms per check \(target <= 5 ms\)/)
  t.match(text, /(✅|❌) Cache hit rate: [0-9.]+% \(target >= 95%\)/)
  t.match(text, '0 of 600 checks did not answer 200', 'every check of the workload is one the SQL rules grant')
  t.equal(lines.at(-1), ok ? '✅ All performance targets met' : '❌ Some performance targets were missed')
  const marks = lines.filter((l) => /^(✅|❌) (Average|Cache hit)/.test(l))
  t.equal(marks.length, 2)
  t.equal(ok, marks.every((l) => l.startsWith('✅')), 'the verdict follows the lines')
})

test('every workload answers 200 to every request; batching and prediction change the backend calls, not the answers', async (t) => {
  for (const workload of WORKLOADS) {
    // Long enough for teammates to visit the same projects (predictions need someone to have gone first), all of it measured.
    const base = workload === 'projects'
      ? { config: 'production' as const, iterations: 6000, warmup: 0, latencyMs: 0, concurrency: 4, thinkMs: 0, workload }
      : { config: 'production' as const, iterations: 400, warmup: 400, latencyMs: 0, concurrency: 4, thinkMs: 0, workload }
    const both = await measure({ ...base, batching: true, warming: true })
    t.equal(both.failures, 0, `${workload}: every request answered 200 (batching, warming)`)
    t.ok(both.firstEverChecks <= both.decisions - Math.round(both.decisions * both.hitRatePercent / 100), `${workload}: first-ever checks are misses`)
    if (workload !== 'projects') continue
    const plain = await measure({ ...base, batching: false, warming: false })
    t.equal(plain.failures, 0, `${workload}: every request answered 200 (no batching, no warming)`)
    t.equal(both.decisions, plain.decisions, `${workload}: the same traffic looks up the same decisions`)
    t.ok(both.backendCalls < plain.backendCalls, `${workload}: batching makes fewer backend calls (${both.backendCalls} < ${plain.backendCalls})`)
    t.equal(plain.warming.predicted, 0, `${workload}: nothing predicted with warming off`)
    t.ok(both.warming.predicted > 0 && both.warming.used > 0, `${workload}: predictions were made and used (${both.warming.used} of ${both.warming.predicted})`)
  }
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
