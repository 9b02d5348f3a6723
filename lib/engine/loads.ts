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
 */
import type { SharedLayer } from './shared.js'
import type { KindState } from './entry.js'
import type { Accepted } from './resolver-call.js'
import type { Stats } from './stats.js'

/** Calls the resolver (or the cached function) with the load's abort signal. */
export type Call = (signal: AbortSignal) => unknown

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
  promise: Promise<unknown>
}

/** What a load needs from the rest of the engine. */
export interface LoadHost {
  readonly shared: SharedLayer | undefined
  now (): number
  /** The resolver call and the check of its answer (rejects with a 503 error). */
  call (load: Load, call: Call): Promise<Accepted>
  /** Checks a value read from L2 like an answer. */
  accept (kind: KindState, raw: unknown): Accepted | Error
  tagsOf (baseTags: string[], value: unknown): string[]
  ttlFor (kind: KindState, value: unknown): number
  store (load: Load, value: unknown, json: string, ttlMs: number): void
}

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
        this.#stats.coalesced++
      }
      const joinedAt = this.#seq
      const value = await load.promise
      // Fenced by an invalidation this caller arrived after, or by one only Redis has seen yet: its answer is stale.
      if (load.fencedAt > joinedAt && !(joined && load.refused)) return value
      fresh = false
    }
  }

  /** Starts a load (also the background refresh of a hot entry). */
  start (kind: KindState, id: string, userId: string, key: string, call: Call, fresh = false): Load {
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
      promise: undefined as unknown as Promise<unknown>
    }
    this.#stats.loads++
    this.#inflight.set(key, load)
    this.#running.add(load)
    load.promise = this.#run(load, call).finally(() => {
      if (this.#inflight.get(key) === load) this.#inflight.delete(key)
      this.#running.delete(load)
      this.#trimTagLog()
    })
    return load
  }

  async #run (load: Load, call: Call): Promise<unknown> {
    const host = this.#host
    const shared = host.shared
    let fence: unknown
    // An L2 hit keeps the expiry it was written with; a resolver answer gets a TTL here.
    let sharedExpiresAt: number | undefined
    let accepted: Accepted | undefined
    if (shared !== undefined) {
      const read = await shared.read(load.key, load.fresh)
      fence = read.fence
      if (read.record !== undefined && read.record.expiresAt > host.now()) {
        // Checked like an answer, so callers get it frozen; a record that does not pass is a miss.
        const record = host.accept(load.kind, read.record.value)
        if (!(record instanceof Error)) {
          accepted = record
          sharedExpiresAt = read.record.expiresAt
        }
      }
    }
    // Every caller gets `value`, the frozen copy, whether it is then stored or not.
    const { value, json } = accepted ?? await host.call(load, call)
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
