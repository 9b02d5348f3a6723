import type { CacheStats, Decision, ResolverContext } from '../lib/types.js'

/** A clock the test moves by hand. */
export function fakeClock (start = 1_000_000): { now: () => number, tick: (ms: number) => void } {
  let t = start
  return { now: () => t, tick: (ms: number) => { t += ms } }
}

export interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (error: unknown) => void
}

export function deferred<T> (): Deferred<T> {
  const out = {} as Deferred<T>
  out.promise = new Promise<T>((resolve, reject) => { out.resolve = resolve; out.reject = reject })
  return out
}

/**
 * A resolver backed by a table the test edits (the "database"), counting
 * its calls. `gate`, when set, holds every call until the test releases it.
 */
export function tableResolver (table: Map<string, Decision | null> = new Map()): {
  resolver: (ctx: ResolverContext) => Promise<Decision | null>
  table: Map<string, Decision | null>
  calls: ResolverContext[]
  gate: Deferred<void> | undefined
  hold: () => Deferred<void>
} {
  const state = {
    table,
    calls: [] as ResolverContext[],
    gate: undefined as Deferred<void> | undefined,
    hold () {
      state.gate = deferred<void>()
      return state.gate
    },
    resolver: async (ctx: ResolverContext): Promise<Decision | null> => {
      state.calls.push(ctx)
      // Read the "database" before waiting, like a query whose answer is already on its way.
      const answer = state.table.get(`${ctx.kind}:${ctx.id}:${ctx.userId}`) ?? null
      const gate = state.gate
      if (gate !== undefined) await gate.promise
      return answer
    }
  }
  return state
}

export const MB = 1024 * 1024

/** mulberry32: a seeded random source in [0, 1) (admission, randomized interleavings: a seed replays a run). */
export function seededRandom (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** The accounted bytes of the entries alone: `totalSizeMb` also counts the TinyLFU sketch and the predictor's tables (rounded to the byte). */
export function entryBytes (stats: CacheStats): number {
  return Math.round(stats.totalSizeMb * MB - stats.eviction.sketchBytes - stats.warming.bytes)
}

export const U1 = '3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f'
export const U2 = '8d7c6b5a-4e3f-4a2b-8c1d-0e9f8a7b6c5d'
export const G1 = 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d'
export const G2 = 'f6e5d4c3-b2a1-4f0e-9d8c-7b6a5f4e3d2c'

/** Runs `fn` and returns what it threw (fails the test when it threw nothing). */
export function thrown (t: { fail: (msg: string) => void }, fn: () => unknown): Error & { code?: string, statusCode?: number } {
  try {
    fn()
  } catch (error) {
    return error as Error & { code?: string }
  }
  t.fail('expected a throw')
  return new Error('nothing thrown')
}

/** Blocks the event loop (no timer can fire) for `ms`. */
export function blockFor (ms: number): void {
  const end = Date.now() + ms
  let spins = 0
  while (Date.now() < end) spins++
  if (spins < 0) throw new Error('unreachable')
}

/** An integer from the environment (a seed to replay a randomized test), or undefined when unset. */
export function envInt (name: string): number | undefined {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  const value = Number(raw)
  if (!Number.isInteger(value)) throw new Error(`${name} must be an integer, got ${raw}`)
  return value
}
