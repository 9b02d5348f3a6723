/**
 * Loads and their fences: every piece of the "invalidation wins" guarantee
 * is in this file.
 *
 * Single flight: one load per key however many callers miss at once.
 * Every invalidation (and every direct write) takes a sequence number; a load
 * remembers the number it started at. An invalidation that touches a load in
 * flight fences it (`fencedAt`): its result is stored nowhere, L1 or L2, and
 * it leaves `inflight`, so callers arriving afterwards start a new load.
 * Tags a decision brings along are only known when its resolver answers, so
 * tag invalidations are also logged while loads run and checked against the
 * decision's tags then; from that moment the load is fenced by its full tag
 * set (`tags`), through the L2 write, until it stores. A caller that joined
 * after such an invalidation loads again instead of taking the old answer.
 * When the shared layer refuses the L2 write, an invalidation this instance
 * may not have heard of yet happened during the load: every caller that
 * joined the load reloads, and only the caller that started it (whose
 * request began before the invalidation) gets the answer.
 *
 * A batch (`startMany`) is one resolver call for many ids of one user, and
 * one load per id: each id is in `inflight`, fenced, joined and stored on
 * its own exactly as a single load, so an invalidation of one id during the
 * batch keeps only that id out of the cache.
 */
import { FST_AUTHZ_RESOLVER_FAILED } from '../errors.js'
import type { SharedLayer } from './shared.js'
import type { KindState } from './entry.js'
import { Predictor, type Follower } from './predictor.js'
import type { Accepted } from './resolver-call.js'
import type { Stats } from './stats.js'

/** Calls the resolver (or the cached function) with the load's abort signal. */
export type Call = (signal: AbortSignal) => unknown

/** Calls a batch resolver for `ids` with the call's abort signal. */
export type ManyCall = (ids: string[], signal: AbortSignal) => unknown

export interface Load {
  readonly key: string
  readonly kind: KindState
  readonly id: string
  readonly userId: string
  readonly baseTags: string[]
  /** The tags that fence the load: its base tags, then every tag of its answer once the resolver answered. */
  tags: string[]
  /** Reads no L2 value (`fresh: true`): the resolver answers. */
  readonly fresh: boolean
  /** The shared layer refused the L2 write: callers that joined must reload. */
  refused: boolean
  readonly startSeq: number
  /** The engine clock when the load started: what its answer may reflect is at least this old. */
  readonly startedAt: number
  /** Sequence number of the first invalidation that touched this load; Infinity while untouched. */
  fencedAt: number
  /** Started by predictive warming and joined by no check yet: the follower that predicted it (what it stores is marked so). */
  prediction: Follower | undefined
  promise: Promise<unknown>
}

/** What a load needs from the rest of the engine. */
export interface LoadHost {
  readonly shared: SharedLayer | undefined
  /** True once the cache is closed. */
  readonly closed: boolean
  now (): number
  /** The resolver call and the check of its answer (rejects with a 503 error). */
  call (load: Load, call: Call): Promise<Accepted>
  /** One batch resolver call for `loads` (one kind, one user): each id's answer or its own error, at its index; rejects when the whole call failed. */
  callMany (loads: Load[], call: ManyCall): Promise<Array<Accepted | Error>>
  /** Checks a value read from L2 like an answer. */
  accept (kind: KindState, raw: unknown): Accepted | Error
  tagsOf (baseTags: string[], value: unknown): string[]
  ttlFor (kind: KindState, value: unknown): number
  store (load: Load, value: unknown, json: string, ttlMs: number): void
}

/** What L2 answered a load: a checked value and its expiry, or nothing; and the fence token for the write. */
interface SharedAnswer {
  /** The layer read, the one written to (attached or detached meanwhile, a load keeps the one it started with). */
  shared: SharedLayer | undefined
  fence: unknown
  accepted: Accepted | undefined
  expiresAt: number | undefined
}

/** Batch calls of one batch check (or of one miss's predictions) running at once. */
export const BATCH_CONCURRENCY = 4

/** A counting semaphore: at most `size` holders at a time, served in order. */
export class Turns {
  #free: number
  readonly #waiting: Array<() => void> = []

  constructor (size: number) {
    this.#free = size
  }

  async take (): Promise<void> {
    if (this.#free > 0) {
      this.#free--
      return
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve))
  }

  give (): void {
    const next = this.#waiting.shift()
    if (next !== undefined) next()
    else this.#free++
  }
}

const NO_SHARED_ANSWER: SharedAnswer = Object.freeze({ shared: undefined, fence: undefined, accepted: undefined, expiresAt: undefined })

export class Loads {
  readonly #inflight = new Map<string, Load>()
  readonly #running = new Set<Load>()
  #tagLog: Array<{ seq: number, tags: Set<string> }> = []
  #seq = 0
  readonly #stats: Stats
  readonly #host: LoadHost

  constructor (stats: Stats, host: LoadHost) {
    this.#stats = stats
    this.#host = host
  }

  /** A new sequence number, for an invalidation or a direct write. */
  next (): number {
    return ++this.#seq
  }

  /** The newest sequence number given out. */
  get seq (): number {
    return this.#seq
  }

  /** Whether a load for `key` is in flight (and not fenced). */
  has (key: string): boolean {
    return this.#inflight.has(key)
  }

  /**
   * Joins the load in flight for the key or starts one, and answers its
   * value; loads again when the load was fenced by an invalidation this
   * caller arrived after. `fresh` never joins.
   */
  async join (kind: KindState, id: string, userId: string, fresh: boolean, call: Call): Promise<unknown> {
    const key = kind.keyOf(id, userId)
    for (;;) {
      let load = fresh ? undefined : this.#inflight.get(key)
      const joined = load !== undefined
      if (load === undefined) {
        load = this.start(kind, id, userId, key, call, fresh)
      } else {
        this.#coalesce(load)
      }
      const joinedAt = this.#seq
      const value = await load.promise
      // Fenced by an invalidation this caller arrived after, or by one only Redis has seen yet: its answer is stale.
      if (load.fencedAt > joinedAt && !(joined && load.refused)) return value
      fresh = false
    }
  }

  /**
   * The values of many ids of one kind and one user, in the order of `ids`
   * (which must be distinct and valid): joins the loads in flight and starts
   * the others as batches of at most `maxBatch` ids (`startMany`),
   * BATCH_CONCURRENCY batches at a time. An id
   * whose load was fenced by an invalidation this caller arrived after is
   * loaded again, as in `join`. Rejects with the first failure.
   */
  async joinMany (kind: KindState, userId: string, ids: string[], call: ManyCall, maxBatch: number): Promise<unknown[]> {
    const values: unknown[] = new Array(ids.length)
    // In waves of BATCH_CONCURRENCY calls: a long list never floods the backend, and an id is in flight
    // (joinable by single checks) only once its call is made, so no check waits on a queue of calls.
    const wave = maxBatch * BATCH_CONCURRENCY
    for (let from = 0; from < ids.length; from += wave) {
      let pending: number[] = []
      for (let i = from; i < Math.min(ids.length, from + wave); i++) pending.push(i)
      while (pending.length > 0) pending = await this.#joinWave(kind, userId, ids, pending, values, call, maxBatch)
    }
    return values
  }

  /** Joins or starts the loads of `pending` (indexes into `ids`), stores their values; answers the indexes to load again (fenced). */
  async #joinWave (kind: KindState, userId: string, ids: string[], pending: number[], values: unknown[], call: ManyCall, maxBatch: number): Promise<number[]> {
    const joinedAt = this.#seq
    const loads: Load[] = new Array(pending.length)
    const joined: boolean[] = new Array(pending.length)
    const missing: Array<{ id: string, key: string }> = []
    const missingAt: number[] = []
    for (let j = 0; j < pending.length; j++) {
      const id = ids[pending[j]]
      const key = kind.keyOf(id, userId)
      const load = this.#inflight.get(key)
      joined[j] = load !== undefined
      if (load !== undefined) {
        this.#coalesce(load)
        loads[j] = load
      } else {
        missing.push({ id, key })
        missingAt.push(j)
      }
    }
    for (let from = 0; from < missing.length; from += maxBatch) {
      const started = this.startMany(kind, userId, missing.slice(from, from + maxBatch), call)
      for (let k = 0; k < started.length; k++) loads[missingAt[from + k]] = started[k]
    }
    const answered = await Promise.all(loads.map((load) => load.promise))
    const again: number[] = []
    for (let j = 0; j < pending.length; j++) {
      const load = loads[j]
      if (load.fencedAt > joinedAt && !(joined[j] && load.refused)) values[pending[j]] = answered[j]
      else again.push(pending[j])
    }
    return again
  }

  /**
   * Starts one load per item, answered by one batch call (`call` with every
   * id L2 did not answer). Each load is in flight, fenced and stored on its
   * own; a failed call fails every load it was to answer.
   */
  startMany (kind: KindState, userId: string, items: Array<{ id: string, key: string, prediction?: Follower }>, call: ManyCall, turns?: Turns): Load[] {
    const loads: Load[] = []
    const settle: Array<{ resolve: (value: unknown) => void, reject: (error: unknown) => void }> = []
    for (const { id, key, prediction } of items) {
      const load = this.#create(kind, id, userId, key, false, prediction)
      const ran = new Promise<unknown>((resolve, reject) => { settle.push({ resolve, reject }) })
      this.#track(load, ran)
      loads.push(load)
    }
    this.#runMany(loads, call, turns).then((results) => {
      for (let i = 0; i < loads.length; i++) {
        const result = results[i]
        if (result.status === 'fulfilled') settle[i].resolve(result.value)
        else settle[i].reject(result.reason)
      }
    }, /* c8 ignore next */ (error: unknown) => { for (const { reject } of settle) reject(error) })
    return loads
  }

  /** Starts a load (also the background refresh of a hot entry). */
  start (kind: KindState, id: string, userId: string, key: string, call: Call, fresh = false, prediction?: Follower): Load {
    // A fresh load is the newest answer: an older load of the key still running (a prediction, a refresh) must not store after it.
    if (fresh) this.fenceKey(key)
    const load = this.#create(kind, id, userId, key, fresh, prediction)
    this.#track(load, this.#run(load, call))
    return load
  }

  /** A caller joined `load` instead of starting one; a predicted load joined by a check has been used. */
  #coalesce (load: Load): void {
    this.#stats.coalesced++
    if (load.prediction !== undefined) {
      Predictor.used(load.prediction)
      load.prediction = undefined
      this.#stats.predictionsUsed++
    }
  }

  #create (kind: KindState, id: string, userId: string, key: string, fresh: boolean, prediction: Follower | undefined): Load {
    const baseTags = kind.baseTags(id, userId)
    const load: Load = {
      key,
      kind,
      id,
      userId,
      baseTags,
      tags: baseTags,
      fresh,
      refused: false,
      startSeq: this.#seq,
      startedAt: this.#host.now(),
      fencedAt: Infinity,
      prediction,
      promise: undefined as unknown as Promise<unknown>
    }
    this.#stats.loads++
    if (prediction !== undefined) this.#stats.predicted++
    this.#inflight.set(key, load)
    this.#running.add(load)
    return load
  }

  #track (load: Load, ran: Promise<unknown>): void {
    load.promise = ran.finally(() => {
      if (this.#inflight.get(load.key) === load) this.#inflight.delete(load.key)
      this.#running.delete(load)
      this.#trimTagLog()
    })
  }

  async #run (load: Load, call: Call): Promise<unknown> {
    const read = await this.#readShared(load)
    return this.#finish(load, read.accepted ?? await this.#host.call(load, call), read)
  }

  /** The L2 reads of a batch, one call for the ids L2 did not answer, and each id finished on its own. */
  async #runMany (loads: Load[], call: ManyCall, turns: Turns | undefined): Promise<Array<PromiseSettledResult<unknown>>> {
    if (turns !== undefined) await turns.take()
    if (this.#host.closed) {
      // The cache closed while this call waited for its turn: nothing it answered could be stored, and the backend is spared.
      turns?.give()
      const reason = new FST_AUTHZ_RESOLVER_FAILED(loads[0].kind.name, { cause: new Error('the cache was closed before the batch call') })
      return loads.map((): PromiseSettledResult<unknown> => ({ status: 'rejected', reason }))
    }
    let reads: SharedAnswer[]
    let answers: Array<Accepted | Error> = []
    let failure: unknown
    try {
      reads = await Promise.all(loads.map((load) => this.#readShared(load)))
      const missing: Load[] = []
      for (let i = 0; i < loads.length; i++) if (reads[i].accepted === undefined) missing.push(loads[i])
      if (missing.length > 0) {
        try {
          answers = await this.#host.callMany(missing, call)
        } catch (error) {
          failure = error
        }
      }
    } finally {
      turns?.give()
    }
    let next = 0
    return Promise.allSettled(loads.map(async (load, i) => {
      const read = reads[i]
      if (read.accepted !== undefined) return this.#finish(load, read.accepted, read)
      if (failure !== undefined) throw failure
      const answer = answers[next++]
      if (answer instanceof Error) throw answer
      return this.#finish(load, answer, read)
    }))
  }

  /** What L2 holds for the load's key (checked like an answer), and the fence to write back with. */
  async #readShared (load: Load): Promise<SharedAnswer> {
    const shared = this.#host.shared
    if (shared === undefined) return NO_SHARED_ANSWER
    const read = await shared.read(load.key, load.fresh)
    if (read.record !== undefined && read.record.expiresAt > this.#host.now()) {
      // Checked like an answer, so callers get it frozen; a record that does not pass is a miss.
      const record = this.#host.accept(load.kind, read.record.value)
      if (!(record instanceof Error)) return { shared, fence: read.fence, accepted: record, expiresAt: read.record.expiresAt }
    }
    return { shared, fence: read.fence, accepted: undefined, expiresAt: undefined }
  }

  /** Stores an answer unless an invalidation fenced the load (L2 first, then L1), and answers its value. */
  async #finish (load: Load, answer: Accepted, read: SharedAnswer): Promise<unknown> {
    const host = this.#host
    const { shared, fence } = read
    // An L2 hit keeps the expiry it was written with; a resolver answer gets a TTL here.
    const sharedExpiresAt = read.expiresAt
    // Every caller gets `value`, the frozen copy, whether it is then stored or not.
    const { value, json } = answer
    if (json === undefined) return value
    const tags = host.tagsOf(load.baseTags, value)
    // From here on, an invalidation of any of the answer's tags fences the load (fenceTouched reads `tags`).
    load.tags = tags
    this.#checkTagLog(load, tags)
    if (load.fencedAt !== Infinity) return value
    const ttlMs = sharedExpiresAt === undefined ? host.ttlFor(load.kind, value) : sharedExpiresAt - host.now()
    if (shared !== undefined && sharedExpiresAt === undefined) {
      const written = await shared.write(load.key, value, ttlMs, tags, fence)
      if (!written) {
        load.refused = true
        if (this.#inflight.get(load.key) === load) this.#inflight.delete(load.key)
        return value
      }
      if (load.fencedAt !== Infinity) return value
    }
    host.store(load, value, json, ttlMs)
    return value
  }

  /**
   * A direct write is an answer given now: no load in flight for its key
   * stores anything, the one callers join and any older one a `fresh` load
   * replaced. Answers the write's sequence number.
   */
  fenceKey (key: string): number {
    const seq = this.next()
    for (const load of this.#running) if (load.key === key) this.#fence(load, seq)
    return seq
  }

  /**
   * Fences every running load `touches` says the invalidation `seq` reaches,
   * and logs its tags for loads whose decision tags are not known yet.
   */
  fenceTouched (seq: number, tags: Set<string>, touches: (key: string, baseTags: string[]) => boolean): void {
    if (this.#running.size === 0) return
    for (const load of this.#running) {
      if (touches(load.key, load.tags)) this.#fence(load, seq)
    }
    if (tags.size > 0) this.#tagLog.push({ seq, tags })
  }

  /** Fences every running load (`all`, close). */
  fenceAll (seq: number): void {
    for (const load of this.#running) this.#fence(load, seq)
  }

  #fence (load: Load, seq: number): void {
    if (load.fencedAt > seq) load.fencedAt = seq
    if (this.#inflight.get(load.key) === load) this.#inflight.delete(load.key)
  }

  #checkTagLog (load: Load, tags: string[]): void {
    if (tags === load.baseTags) return
    for (const { seq, tags: touched } of this.#tagLog) {
      if (seq <= load.startSeq) continue
      for (const tag of tags) {
        if (touched.has(tag)) {
          if (load.fencedAt > seq) load.fencedAt = seq
          return
        }
      }
    }
  }

  #trimTagLog (): void {
    if (this.#tagLog.length === 0) return
    if (this.#running.size === 0) {
      this.#tagLog = []
      return
    }
    const oldest = this.#running.values().next().value as Load
    let drop = 0
    while (drop < this.#tagLog.length && this.#tagLog[drop].seq <= oldest.startSeq) drop++
    if (drop > 0) this.#tagLog.splice(0, drop)
  }
}
