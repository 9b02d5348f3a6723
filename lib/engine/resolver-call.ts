/**
 * The resolver call: one call under `loaderTimeoutMs`, and the check of its
 * answer. Every failure rejects with FST_AUTHZ_RESOLVER_FAILED or _TIMEOUT
 * (503), is counted and reported, whatever the resolver threw or answered;
 * nothing here ever grants.
 */
import { FST_AUTHZ_RESOLVER_FAILED, FST_AUTHZ_RESOLVER_TIMEOUT } from '../errors.js'
import { describe, isPlainObject } from '../options.js'
import type { BatchResolver, Decision, Resolver } from '../types.js'
import { deepFreeze } from './codec.js'
import type { KindState, Validation } from './entry.js'
import type { Stats } from './stats.js'

/** The answer of a denial: `null`/`undefined` from a resolver, or a missing id. */
export const DENIED: Decision = Object.freeze({ granted: false })

/**
 * An answer as callers get it and the cache stores it: a deep-frozen copy
 * made by a JSON round trip, and that JSON. `json` is undefined only for the
 * `undefined` result of a `validation: 'any'` kind (returned, never stored).
 */
export type Accepted = { value: unknown, json: string } | { value: undefined, json: undefined }

const NOT_STORED: Accepted = { value: undefined, json: undefined }
const DENIED_ACCEPTED: Accepted = { value: DENIED, json: JSON.stringify(DENIED) }

/**
 * Authorization answers repeat (`{ granted: true, access: ['read'] }` for
 * thousands of pairs), so an accepted small answer is interned by its JSON:
 * the same frozen object is served and stored for every equal answer, which
 * saves the parse and freeze of each insert and the memory of a copy per
 * entry. Safe because it is deeply frozen. One table per validation mode (an
 * answer accepted as `any` is not thereby a valid Decision).
 */
const INTERN_MAX_JSON = 256
const INTERN_MAX_VALUES = 4096
const INTERNED: Record<Validation, Map<string, Accepted>> = { decision: new Map(), profile: new Map(), any: new Map() }

/** What the load timer rejects with: private, so no resolver can throw it. */
const TIMED_OUT = Symbol('fastify-authz-cache.timedOut')

export function isStringArray (value: unknown): value is string[] {
  if (!Array.isArray(value)) return false
  for (const item of value) if (typeof item !== 'string') return false
  return true
}

/** `value` when it is an Error, else a TypeError saying what it was (a resolver may throw anything). */
function asError (value: unknown, what: string): Error {
  try {
    if (value instanceof Error) return value
    return new TypeError(`${what} ${value === undefined ? 'undefined' : describe(value)}, not an Error`, { cause: value })
  } catch {
    // A Proxy whose traps throw: even instanceof cannot look at it.
    return new TypeError(`${what} a value that cannot be inspected, not an Error`, { cause: value })
  }
}

/**
 * Calls the resolver under `timeoutMs` and accepts its answer. A non-Error
 * thrown, or an error of the resolver's own carrying our timeout code, is a
 * failure: only our timer or our clock makes a timeout. `failed` is told of
 * every failure (the observer: logging).
 */
export async function callResolver (kind: KindState, timeoutMs: number, stats: Stats, call: (signal: AbortSignal) => unknown, failed: (error: Error) => void): Promise<Accepted> {
  const raw = await timedCall(kind, timeoutMs, stats, call, failed)
  const accepted = validateAnswer(kind.validation, raw)
  if (accepted instanceof Error) {
    stats.loaderErrors++
    failed(accepted)
    throw new FST_AUTHZ_RESOLVER_FAILED(kind.name, { cause: accepted })
  }
  return accepted
}

/**
 * Calls a batch resolver under `timeoutMs` (for the whole call) and accepts
 * the answer of each id: what it answers for `ids[i]` is at index i, an
 * Accepted or the FST_AUTHZ_RESOLVER_FAILED of that id alone (reported to
 * `failed` with its index). An id the
 * answer leaves out is a denial. Rejects, failing every id, when the call
 * throws, times out, or answers something that is not a Map or a plain object.
 */
export async function callBatchResolver (kind: KindState, ids: string[], timeoutMs: number, stats: Stats, call: (signal: AbortSignal) => unknown, failed: (error: Error, index?: number) => void): Promise<Array<Accepted | Error>> {
  stats.batches++
  const raw = await timedCall(kind, timeoutMs, stats, call, failed)
  const answers: Array<Accepted | Error> = new Array(ids.length)
  let pick: (id: string) => unknown
  try {
    pick = batchReader(raw)
  } catch (error) {
    stats.loaderErrors++
    failed(error as Error)
    throw new FST_AUTHZ_RESOLVER_FAILED(kind.name, { cause: error })
  }
  for (let i = 0; i < ids.length; i++) {
    let accepted: Accepted | Error
    try {
      accepted = validateAnswer(kind.validation, pick(ids[i]))
    } catch (error) {
      // A Map subclass or a Proxy whose reads throw.
      accepted = new TypeError('reading the batch answer threw', { cause: error })
    }
    if (accepted instanceof Error) {
      stats.loaderErrors++
      failed(accepted, i)
      answers[i] = new FST_AUTHZ_RESOLVER_FAILED(kind.name, { cause: accepted })
    } else {
      answers[i] = accepted
    }
  }
  return answers
}

/**
 * How to read one id's answer from a batch answer: a `Map`, or a plain
 * object read by own properties only (an id such as `constructor` or
 * `__proto__` is never found on a prototype). Throws a TypeError for
 * anything else.
 */
function batchReader (raw: unknown): (id: string) => unknown {
  if (raw instanceof Map) return (id) => raw.get(id)
  if (isPlainObject(raw)) return (id) => Object.hasOwn(raw, id) ? raw[id] : undefined
  throw new TypeError(`a batch resolver must answer a Map or a plain object of id -> Decision, got ${raw === undefined ? 'undefined' : typeof raw === 'function' ? 'a function' : describe(raw)}`)
}

/** The single-id resolver of a kind that has only `many`: a batch of one. */
export function oneFromMany (many: BatchResolver): Resolver {
  return async ({ kind, userId, id, signal }) => batchReader(await many({ kind, userId, ids: [id], signal }))(id) as Decision | null | undefined
}

/** The raw answer of one call under `timeoutMs`; a throw, a rejection or a timeout rejects with the 503 error, counted and reported. */
async function timedCall (kind: KindState, timeoutMs: number, stats: Stats, call: (signal: AbortSignal) => unknown, failed: (error: Error) => void): Promise<unknown> {
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(reject, timeoutMs, TIMED_OUT) })
  const started = performance.now()
  let raw: unknown
  let threw = false
  try {
    raw = await Promise.race([Promise.resolve().then(() => call(controller.signal)), timeout])
  } catch (error) {
    threw = true
    raw = error
  } finally {
    clearTimeout(timer)
  }
  // The timer cannot fire while a resolver blocks the event loop, and its answer then settles
  // first: the monotonic clock catches what arrived late anyway.
  if ((threw && raw === TIMED_OUT) || performance.now() - started > timeoutMs) {
    stats.loaderTimeouts++
    const error = new FST_AUTHZ_RESOLVER_TIMEOUT(kind.name, timeoutMs)
    controller.abort(error)
    failed(error)
    throw error
  }
  if (threw) {
    stats.loaderErrors++
    failed(asError(raw, 'the resolver threw'))
    throw new FST_AUTHZ_RESOLVER_FAILED(kind.name, { cause: raw })
  }
  return raw
}

/**
 * Checks an answer (a resolver's, an L2 record, a `set*()` value) and makes
 * what callers get and the cache stores: a deep-frozen copy from a JSON
 * round trip, and that JSON. The copy is what gets checked, so what was
 * checked is exactly what is served and stored; the answer itself is read
 * once (by JSON.stringify), and neither frozen nor kept. Never throws:
 * returns a TypeError when the answer is not acceptable, when JSON cannot
 * hold it (BigInt, cycle, function, symbol), or when reading it throws (a
 * getter, a Proxy trap, a toJSON).
 */
export function validateAnswer (validation: Validation, raw: unknown): Accepted | Error {
  if (validation === 'any') {
    if (raw === undefined) return NOT_STORED
  } else if (raw === null || raw === undefined) {
    return DENIED_ACCEPTED
  }
  let json: string | undefined
  try {
    // Map, Set, class instances: their JSON would silently lose what they hold.
    if (validation !== 'any' && !isPlainObject(raw)) {
      return new TypeError(`got ${typeof raw === 'function' ? 'a function' : describe(raw)}, not a Decision or null`)
    }
    json = JSON.stringify(raw)
  } catch (error) {
    return new TypeError('JSON cannot hold the answer: reading or serializing it threw', { cause: error })
  }
  if (json === undefined) {
    return new TypeError(`JSON cannot hold the answer: ${typeof raw === 'object' ? 'its toJSON gives undefined' : `got a ${typeof raw}`}`)
  }
  const interned = json.length <= INTERN_MAX_JSON ? INTERNED[validation].get(json) : undefined
  if (interned !== undefined) return interned
  const copy: unknown = JSON.parse(json)
  if (validation !== 'any') {
    if (!isPlainObject(copy)) return new TypeError(`got an answer whose JSON is ${describe(copy)}, not a Decision`)
    if (validation === 'decision' || copy.granted !== undefined) {
      if (typeof copy.granted !== 'boolean') return new TypeError('got a Decision without a boolean `granted`')
      if (copy.access !== undefined && !isStringArray(copy.access)) return new TypeError('Decision.access must be an array of strings')
      if (copy.role !== undefined && typeof copy.role !== 'string') return new TypeError('Decision.role must be a string')
    }
    if (copy.tags !== undefined && !isStringArray(copy.tags)) return new TypeError('Decision.tags must be an array of strings')
    if (copy.ttlSeconds !== undefined && !(typeof copy.ttlSeconds === 'number' && copy.ttlSeconds > 0 && Number.isFinite(copy.ttlSeconds))) {
      return new TypeError('Decision.ttlSeconds must be a positive number')
    }
  }
  const accepted = { value: deepFreeze(copy), json }
  if (json.length <= INTERN_MAX_JSON) {
    const table = INTERNED[validation]
    // A generation at a time: when full, start over (no per-hit bookkeeping).
    if (table.size >= INTERN_MAX_VALUES) table.clear()
    table.set(json, accepted)
  }
  return accepted
}
