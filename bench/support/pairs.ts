/**
 * The data sets of the cache benchmarks: (generationId, userId) pairs of
 * seeded UUIDs, and the SPEC key a plain cache stores them under.
 */
import type { Decision } from '../../lib/index.js'
import { uuids } from './random.js'

export interface Pair {
  g: string
  u: string
}

/** The decision every benchmark stores. */
export const DECISION: Decision = Object.freeze({ granted: true, access: ['read', 'write'], role: 'member' }) as Decision

/** Entries per user in generated data sets: a user holds access to several generations. */
export const ENTRIES_PER_USER = 20

/** The SPEC key of a generation access entry, as a plain cache stores it. */
export function specKey (g: string, u: string): string {
  return `auth:gen:${g}:user:${u}:access`
}

/**
 * `n` distinct pairs: a new user every `ENTRIES_PER_USER` pairs, a new
 * generation for every pair. Same seed, same pairs.
 */
export function makePairs (n: number, seed: number): Pair[] {
  const id = uuids(seed)
  const pairs: Pair[] = new Array(n)
  let user = ''
  for (let i = 0; i < n; i++) {
    if (i % ENTRIES_PER_USER === 0) user = id()
    pairs[i] = { g: id(), u: user }
  }
  return pairs
}
