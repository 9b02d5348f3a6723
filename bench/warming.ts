/**
 * Batch checks and predictive warming, side by side in one run:
 *
 * 1. The perf workloads (examples/perf.ts: `projects`, the default;
 *    `dashboard`; `scroll`, kept out of development as the workload nothing
 *    was tuned on; `views`, the earlier versions' workload) through the
 *    example service (PGlite, SIMULATED 120 ms backend, production preset),
 *    each under four configurations: batching off/on x predictive warming
 *    off/on. Same seeded traffic for each; the steady state after a
 *    warm-up of the same workload is measured.
 * 2. A cold list of 50 generations over real HTTP (`fetch` to a listening
 *    server): the caller opened the project already (its project check is
 *    cached), then lists it for the first time: backend calls and wall time,
 *    batching on and off, predictive warming off (with it, the project
 *    check's prediction answers the list before it is asked).
 *
 *   npm run build && node dist/bench/warming.js [--requests 20000] [--warmup 20000] [--only projects,dashboard,scroll,views,cold-list]
 */
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { buildExampleApp, notificationsApplied } from '../examples/app.js'
import { seedMany } from '../examples/db.js'
import { measure, type PerfResult, type WorkloadName } from '../examples/perf.js'
import { fixed, int, table, targetsTable, type Target } from './support/format.js'

const LATENCY_MS = 120
const CONFIGS = [
  { batching: false, warming: false },
  { batching: true, warming: false },
  { batching: false, warming: true },
  { batching: true, warming: true }
] as const

export interface WorkloadRow { workload: WorkloadName, batching: boolean, warming: boolean, result: PerfResult }
export interface ColdList { batching: boolean, calls: number[], wallMs: number[] }
export interface WarmingResult { requests: number, warmup: number, rows: WorkloadRow[], coldList: ColdList[], targets: Target[] }

function flag (name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i === -1 ? fallback : process.argv[i + 1] ?? fallback
}

/** A user who opened a 50-generation project lists it for the first time, five users in turn. */
async function coldList (batching: boolean): Promise<ColdList> {
  let calls = 0
  // Warming off: a prediction made at the project check would answer the list before it is asked.
  const { app, db } = await buildExampleApp({ preset: 'production', latencyMs: LATENCY_MS, batch: batching, warmingEnabled: false, onCall: () => { calls++ } })
  try {
    const seed = await seedMany(db, { users: 5, teams: 1, projectsPerTeam: 1, generations: 50 })
    await notificationsApplied(app, db)
    const base = await app.listen({ port: 0, host: '127.0.0.1' })
    const out: ColdList = { batching, calls: [], wallMs: [] }
    for (let user = 0; user < seed.users; user++) {
      const headers = { authorization: `Bearer ${app.jwt.sign({ sub: seed.userId(user) })}` }
      const project = `${base}/projects/${seed.projectId(0)}`
      if ((await fetch(project, { headers })).status !== 200) throw new Error('the project page failed')
      calls = 0
      const start = performance.now()
      const res = await fetch(`${project}/generations?limit=50`, { headers })
      const body = await res.json() as { generations: unknown[] }
      out.wallMs.push(performance.now() - start)
      out.calls.push(calls)
      if (res.status !== 200 || body.generations.length !== 50) throw new Error(`the list answered ${res.status} with ${body.generations.length} generations`)
    }
    return out
  } finally {
    await app.close()
    await db.close()
  }
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]

export async function run (options: { log: (line: string) => void }): Promise<WarmingResult> {
  const requests = Number(flag('requests', '20000'))
  const warmup = Number(flag('warmup', '20000'))
  const only = flag('only', 'projects,dashboard,scroll,views,cold-list').split(',')
  const rows: WorkloadRow[] = []
  for (const workload of ['projects', 'dashboard', 'scroll', 'views'] as const) {
    if (!only.includes(workload)) continue
    for (const config of CONFIGS) {
      options.log(`  ${workload}: batching ${config.batching ? 'on' : 'off'}, warming ${config.warming ? 'on' : 'off'}...`)
      const result = await measure({ config: 'production', iterations: requests, warmup, latencyMs: LATENCY_MS, concurrency: 16, workload, ...config })
      rows.push({ workload, ...config, result })
    }
  }
  const coldLists: ColdList[] = []
  if (only.includes('cold-list')) {
    for (const batching of [true, false]) {
      options.log(`  cold list of 50, batching ${batching ? 'on' : 'off'}...`)
      coldLists.push(await coldList(batching))
    }
  }
  const targets: Target[] = []
  const row = (workload: string, batching: boolean, warming: boolean): PerfResult | undefined =>
    rows.find((r) => r.workload === workload && r.batching === batching && r.warming === warming)?.result
  const on = row('projects', true, true)
  const off = row('projects', true, false)
  if (on !== undefined && off !== undefined) {
    targets.push({ name: 'projects (default): average per request, batching and warming on', pass: on.averageMs <= 1.5, detail: `${fixed(on.averageMs, 3)} ms (<= 1.5 ms)` })
    targets.push({ name: 'projects: hit rate, batching and warming on', pass: on.hitRatePercent >= 99, detail: `${fixed(on.hitRatePercent)}% (>= 99%; the best possible, every miss but the first-ever checks avoided: ${fixed(on.hitRateCeilingPercent)}%)` })
    targets.push({ name: 'projects: backend calls with prediction, against without', pass: on.backendCalls <= 1.2 * off.backendCalls, detail: `${int(on.backendCalls)} / ${int(off.backendCalls)} = ${fixed(on.backendCalls / off.backendCalls)}x (<= 1.2x)` })
  }
  for (const workload of ['dashboard', 'scroll']) {
    const w = row(workload, true, true)
    const wo = row(workload, true, false)
    if (w === undefined || wo === undefined) continue
    targets.push({ name: `${workload}: prediction improves the average and the hit rate`, pass: w.averageMs < wo.averageMs && w.hitRatePercent > wo.hitRatePercent, detail: `${fixed(wo.averageMs, 3)} -> ${fixed(w.averageMs, 3)} ms, ${fixed(wo.hitRatePercent)} -> ${fixed(w.hitRatePercent)}%, backend calls ${fixed(w.backendCalls / wo.backendCalls)}x` })
  }
  const batched = coldLists.find((c) => c.batching)
  if (batched !== undefined) {
    targets.push({ name: 'cold list of 50 generations: backend calls', pass: batched.calls.every((c) => c === 1), detail: `${batched.calls.join(', ')} (1 each)` })
    targets.push({ name: 'cold list of 50 generations: wall time over HTTP (median of 5)', pass: median(batched.wallMs) <= 130, detail: `${fixed(median(batched.wallMs), 1)} ms (<= 130 ms)` })
  }
  return { requests, warmup, rows, coldList: coldLists, targets }
}

export function formatResult (result: WarmingResult): string {
  const parts = [targetsTable(result.targets), '']
  if (result.rows.length > 0) {
    parts.push(`${int(result.requests)} requests measured after ${int(result.warmup)} of warm-up of the same workload, 16 concurrent sessions, production preset, SIMULATED ${LATENCY_MS} ms backend. "Hit rate" counts every decision looked up (a list of 50 looks up 50); "best possible" avoids every miss but a resource's first check ever.`, '')
    parts.push(table(
      ['workload', 'batching', 'warming', 'avg ms/request', 'p99 ms', 'hit rate', 'best possible', 'backend calls', 'predicted', 'used', 'wasted', 'failures'],
      result.rows.map(({ workload, batching, warming, result: r }) => [
        workload, batching ? 'on' : 'off', warming ? 'on' : 'off', fixed(r.averageMs, 3), fixed(r.p99Ms, 1), `${fixed(r.hitRatePercent)}%`,
        `${fixed(r.hitRateCeilingPercent)}%`, int(r.backendCalls), int(r.warming.predicted), int(r.warming.used), int(r.warming.wasted), int(r.failures)
      ]),
      ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']))
  }
  if (result.coldList.length > 0) {
    parts.push('', 'Cold list of 50 generations over HTTP (the project check cached; five users in turn):', '')
    parts.push(table(['batching', 'backend calls', 'wall ms'], result.coldList.map((c) => [c.batching ? 'on' : 'off', c.calls.join(', '), c.wallMs.map((m) => fixed(m, 1)).join(', ')]), ['l', 'r', 'r']))
  }
  return parts.join('\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  run({ log: (line) => process.stderr.write(`${line}\n`) }).then((result) => {
    process.stdout.write(formatResult(result) + '\n')
  }, (error: Error) => {
    process.stderr.write(`${error.stack ?? error.message}\n`)
    process.exitCode = 1
  })
}
