/**
 * The seed's performance test, through the real plugin and the example
 * service's SQL resolvers (PGlite), with a SIMULATED backend latency on
 * every resolver call (default 120 ms, the cost of a check against a real
 * authorization service). Run by `npx authz-cache perf` / `npm run perf`.
 *
 * Workload: 5,000 users in 100 teams, 20,000 generations. Traffic comes in
 * page views: a view is a user (Zipf, s = 1.1, over all users) opening a
 * generation of their team (Zipf, s = 1.2, over the team's 200), and each
 * view makes 20-60 checked requests (media, frames, polling), one after the
 * other. `concurrency` views run at once. A seeded PRNG makes every run the
 * same workload. Every request is `GET /generations/:id` through
 * `app.inject` (JWT verification, the route's onRequest check, the handler).
 */
import { performance } from 'node:perf_hooks'
import { buildExampleApp, notificationsApplied } from './app.js'
import { seedMany } from './db.js'
import { createResolvers } from './resolvers.js'

export interface PerfOptions {
  config: 'development' | 'production'
  iterations: number
  latencyMs: number
  concurrency: number
}

export interface PerfResult {
  checks: number
  failures: number
  averageMs: number
  p50Ms: number
  p99Ms: number
  hitRatePercent: number
  uncachedAverageMs: number
  reductionPercent: number
  cacheHitAverageMs: number
  cacheHitP99Ms: number
  targetAccessTimeMs: number
  targetHitRatePercent: number
  meetsAccessTime: boolean
  meetsHitRate: boolean
}

const USERS = 5000
const TEAMS = 100
const GENERATIONS = 20_000
const BURST_MIN = 20
const BURST_MAX = 60
const UNCACHED_SAMPLES = 16

/** mulberry32: a small seeded PRNG, so every run replays the same workload. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A Zipf(s) sampler over 0..n-1 (0 the most frequent). */
function zipf (n: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(n)
  let total = 0
  for (let i = 0; i < n; i++) {
    total += 1 / (i + 1) ** s
    cdf[i] = total
  }
  return () => {
    const r = random() * total
    let lo = 0
    let hi = n - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cdf[mid] < r) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

function quantile (sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]
}

const ms = (value: number): string => value < 0.1 ? value.toFixed(4) : value.toFixed(2)
const mark = (ok: boolean): string => ok ? '✅' : '❌'

/** Runs the workload and prints the seed's lines through `out`; true when every target is met. */
export async function runPerf (options: PerfOptions, out: (line: string) => void): Promise<boolean> {
  const result = await measure(options, out)
  out(`${mark(result.meetsAccessTime)} Average response time: ${ms(result.averageMs)} ms per check (target <= ${result.targetAccessTimeMs} ms)`)
  out(`${mark(result.meetsHitRate)} Cache hit rate: ${result.hitRatePercent.toFixed(2)}% (target >= ${result.targetHitRatePercent}%)`)
  out(`   per check: p50 ${ms(result.p50Ms)} ms, p99 ${ms(result.p99Ms)} ms; ${result.failures} of ${result.checks} checks did not answer 200`)
  out(`   cache hit path (the plugin's sampled stats): ${ms(result.cacheHitAverageMs)} ms average, ${ms(result.cacheHitP99Ms)} ms p99`)
  out(`   uncached check (SIMULATED ${options.latencyMs} ms backend + SQL): ${ms(result.uncachedAverageMs)} ms -> ${result.reductionPercent.toFixed(2)}% less time per check with the cache (${(result.uncachedAverageMs / Math.max(result.averageMs, 1e-9)).toFixed(1)}x faster)`)
  const ok = result.meetsAccessTime && result.meetsHitRate && result.failures === 0
  out(ok ? '✅ All performance targets met' : '❌ Some performance targets were missed')
  return ok
}

/** The measurement alone (for tests and benchmarks). */
export async function measure (options: PerfOptions, out: (line: string) => void = () => {}): Promise<PerfResult> {
  const { app, db } = await buildExampleApp({ preset: options.config, latencyMs: options.latencyMs })
  try {
    const seed = await seedMany(db, { users: USERS, teams: TEAMS, generations: GENERATIONS, projectsPerTeam: 3 })
    // The seed's rows notified the cache (./db.ts triggers): those invalidations land before the clock starts.
    await notificationsApplied(app, db)
    out(`fastify-authz-cache perf: preset ${options.config}, ${options.iterations} checks, ${options.concurrency} concurrent views, SIMULATED backend latency ${options.latencyMs} ms`)
    out(`   workload: ${USERS} users, ${TEAMS} teams, ${GENERATIONS} generations; views of ${BURST_MIN}-${BURST_MAX} requests, Zipf users (s=1.1) and generations (s=1.2); database ${db.label}`)

    const random = prng(0x5eed)
    const pickUser = zipf(seed.users, 1.1, random)
    const perTeam = Math.floor(seed.generations / seed.teams)
    const pickGeneration = zipf(perTeam, 1.2, random)
    const tokens = new Map<number, string>()
    const tokenOf = (user: number): string => {
      let token = tokens.get(user)
      if (token === undefined) {
        token = `Bearer ${app.jwt.sign({ sub: seed.userId(user) })}`
        tokens.set(user, token)
      }
      return token
    }

    const durations = new Float64Array(options.iterations)
    let issued = 0
    let failures = 0
    const worker = async (): Promise<void> => {
      while (issued < options.iterations) {
        const user = pickUser()
        // Generation j is in team j % teams (seedMany's layout): the user's team's k-th generation.
        const generation = seed.teamOfUser(user) + seed.teams * pickGeneration()
        const url = `/generations/${seed.generationId(generation)}`
        const headers = { authorization: tokenOf(user) }
        const burst = BURST_MIN + Math.floor(random() * (BURST_MAX - BURST_MIN + 1))
        for (let i = 0; i < burst && issued < options.iterations; i++) {
          const slot = issued++
          const start = performance.now()
          const res = await app.inject({ method: 'GET', url, headers })
          durations[slot] = performance.now() - start
          if (res.statusCode !== 200) failures++
        }
      }
    }
    await Promise.all(Array.from({ length: options.concurrency }, worker))

    const stats = app.authz.getStats()
    const misses = stats.byKind.generation?.misses ?? 0
    const sorted = durations.slice().sort()
    let sum = 0
    for (const d of durations) sum += d
    const averageMs = sum / options.iterations
    const hitRatePercent = (1 - misses / options.iterations) * 100

    // The uncached path: the same resolver, called directly.
    const resolvers = createResolvers(db, { latencyMs: options.latencyMs })
    let uncached = 0
    for (let i = 0; i < UNCACHED_SAMPLES; i++) {
      const user = pickUser()
      const generation = seed.teamOfUser(user) + seed.teams * pickGeneration()
      const start = performance.now()
      await resolvers.generation({ kind: 'generation', userId: seed.userId(user), id: seed.generationId(generation), signal: new AbortController().signal })
      uncached += performance.now() - start
    }
    const uncachedAverageMs = uncached / UNCACHED_SAMPLES
    const targetAccessTimeMs = stats.performanceTargets.targetAccessTimeMs
    const targetHitRatePercent = stats.performanceTargets.targetHitRatePercent
    return {
      checks: options.iterations,
      failures,
      averageMs,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
      hitRatePercent,
      uncachedAverageMs,
      reductionPercent: (1 - averageMs / uncachedAverageMs) * 100,
      cacheHitAverageMs: stats.averageAccessTimeMs,
      cacheHitP99Ms: stats.p99AccessTimeMs,
      targetAccessTimeMs,
      targetHitRatePercent,
      meetsAccessTime: averageMs <= targetAccessTimeMs,
      meetsHitRate: hitRatePercent >= targetHitRatePercent
    }
  } finally {
    await app.close()
    await db.close()
  }
}
