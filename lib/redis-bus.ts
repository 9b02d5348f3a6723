/**
 * The invalidation bus (Redis pub/sub) of the Redis layer: the subscriber
 * connection, heartbeats, and acknowledgements.
 *
 * Messages on the channel (JSON):
 *   { id, from, request }  an invalidation; every instance applies it, then acknowledges
 *   { ack, from }          the acknowledgement of invalidation `ack` by instance `from`
 *   { hb, from }           a heartbeat
 *
 * Liveness is checked, not assumed: every `heartbeatMs` an instance
 * publishes a heartbeat through its command connection and must hear its
 * own through its subscriber within twice that (plus `commandTimeoutMs`).
 * A closed connection, a cut command connection and a frozen Redis (sockets
 * open, nothing moving) all end the same way: the bus is down, so the
 * engine's staleness bound applies and nothing is read from L2. It is up
 * again only when a heartbeat goes round again; the engine then drops every
 * L1 entry stored before, since invalidations may have been missed.
 *
 * Acknowledgements: PUBLISH answers how many subscribers received a
 * message (this instance's own included), and heartbeats tell which
 * instances are alive. Each instance acknowledges after it applied the
 * invalidation (this one acknowledges its own on receipt: it applied it
 * before publishing), and the publisher waits for as many acknowledgements
 * as the larger of the two counts, at most `ackTimeoutMs`.
 */
import { randomUUID } from 'node:crypto'

/** The part of an ioredis client the bus uses. */
export interface BusClient {
  status: string
  on (event: string, listener: (...args: any[]) => void): unknown
  subscribe (channel: string): Promise<unknown>
  connect (): Promise<void>
  disconnect (): void
}

export interface BusHost {
  /** Publishes a message through the command connection (bounded by the command timeout). */
  publish (message: string): Promise<number>
  /** Applies an invalidation another instance published; throws on a malformed one. */
  apply (request: unknown): void
  /** A message that is not one of ours, or an invalidation that would not apply: a lost revocation is worse than a cold cache. */
  malformed (error: unknown, bytes: number): void
  up (): void
  down (reason: 'closed' | 'silent'): void
  error (error: Error): void
}

interface Tracker {
  /** Receivers PUBLISH counted; undefined until the script answered. */
  expected: number | undefined
  acked: number
  settle: (() => void) | undefined
}

export class Bus {
  /** This instance's id on the bus. */
  readonly id = randomUUID()
  readonly #sub: BusClient
  readonly #channel: string
  readonly #host: BusHost
  readonly #timer: NodeJS.Timeout
  readonly #silentAfterMs: number
  readonly #trackers = new Map<string, Tracker>()
  /** Instance id -> when its last heartbeat was heard (this one included). */
  readonly #peers = new Map<string, number>()
  #subscribed = false
  #up = false
  #heardAt = 0
  #beat = 0
  #closed = false
  #waiters: Array<() => void> = []

  constructor (sub: BusClient, channel: string, heartbeatMs: number, commandTimeoutMs: number, host: BusHost) {
    this.#sub = sub
    this.#channel = channel
    this.#host = host
    this.#silentAfterMs = 2 * heartbeatMs + commandTimeoutMs
    sub.on('error', (error: Error) => host.error(error))
    sub.on('message', this.#onMessage)
    sub.on('ready', this.#onReady)
    sub.on('close', this.#onClose)
    // A duplicate of a lazyConnect client waits for a command that would never come.
    if (sub.status === 'wait') sub.connect().catch(() => {})
    this.#timer = setInterval(() => this.#tick(), heartbeatMs)
    this.#timer.unref()
  }

  /** Whether the bus is up: subscribed, and this instance heard its own heartbeat recently. */
  get up (): boolean {
    return this.#up
  }

  /** Resolves when the bus is up (at once if it is). */
  waitUp (): Promise<void> {
    return this.#up ? Promise.resolve() : new Promise((resolve) => this.#waiters.push(resolve))
  }

  #tick (): void {
    if (this.#closed) return
    if (this.#up && performance.now() - this.#heardAt > this.#silentAfterMs) {
      this.#up = false
      this.#host.down('silent')
    }
    if (this.#subscribed) this.#heartbeat()
  }

  #heartbeat (): void {
    this.#host.publish(JSON.stringify({ hb: ++this.#beat, from: this.id })).catch(() => {})
  }

  readonly #onReady = (): void => {
    // Subscribe again before anything else, so no invalidation falls in between; up once a heartbeat went round.
    this.#sub.subscribe(this.#channel).then(() => {
      if (this.#closed) return
      this.#subscribed = true
      this.#heartbeat()
    }, (error: Error) => this.#host.error(error))
  }

  readonly #onClose = (): void => {
    if (this.#closed) return
    this.#subscribed = false
    const wasUp = this.#up
    this.#up = false
    if (wasUp) this.#host.down('closed')
  }

  readonly #onMessage = (channel: string, message: string): void => {
    if (channel !== this.#channel || this.#closed) return
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {}
    const m = parsed !== null && typeof parsed === 'object' ? parsed as { id?: unknown, from?: unknown, request?: unknown, ack?: unknown, hb?: unknown } : undefined
    if (m !== undefined && m.hb !== undefined) {
      if (typeof m.from === 'string') this.#peers.set(m.from, performance.now())
      if (m.from === this.id) this.#heard()
      return
    }
    if (m !== undefined && typeof m.ack === 'string') {
      if (m.from !== this.id) this.#acked(m.ack)
      return
    }
    if (m !== undefined && m.from === this.id && typeof m.id === 'string') {
      this.#acked(m.id)
      return
    }
    try {
      if (m?.request === undefined) throw new TypeError('not a JSON object holding an invalidation')
      this.#host.apply(m.request)
      if (typeof m.id === 'string') this.#host.publish(JSON.stringify({ ack: m.id, from: this.id })).catch(() => {})
    } catch (error) {
      this.#host.malformed(error, message.length)
    }
  }

  #heard (): void {
    this.#heardAt = performance.now()
    if (this.#up || !this.#subscribed) return
    this.#up = true
    this.#host.up()
    for (const waiter of this.#waiters.splice(0)) waiter()
  }

  /**
   * Instances heard within the liveness window, this one included. On Redis
   * Cluster, PUBLISH counts only the subscribers of the node that ran it, so
   * the publisher expects acknowledgements from the larger of the two counts.
   */
  peers (): number {
    const now = performance.now()
    let live = 0
    for (const [id, at] of this.#peers) {
      if (now - at <= this.#silentAfterMs) live++
      else this.#peers.delete(id)
    }
    return live
  }

  /** A new invalidation message; `track` starts counting its acknowledgements. */
  message (request: unknown): { id: string, text: string } {
    const id = randomUUID()
    return { id, text: JSON.stringify({ id, from: this.id, request }) }
  }

  /** Starts counting acknowledgements of a message (before it is published: they may arrive before PUBLISH answers). */
  track (id: string): void {
    this.#trackers.set(id, { expected: undefined, acked: 0, settle: undefined })
  }

  /**
   * Waits until as many acknowledgements as `receivers` arrived, or `ms`
   * passed; answers how many arrived. Stops tracking the message.
   */
  async acknowledged (id: string, receivers: number, ms: number): Promise<number> {
    const tracker = this.#trackers.get(id)
    if (tracker === undefined) return 0
    tracker.expected = receivers
    if (tracker.acked < receivers) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms)
        tracker.settle = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    this.#trackers.delete(id)
    return Math.min(tracker.acked, receivers)
  }

  /** Stops tracking a message that was not published. */
  forget (id: string): void {
    this.#trackers.delete(id)
  }

  #acked (id: string): void {
    const tracker = this.#trackers.get(id)
    if (tracker === undefined) return
    tracker.acked++
    if (tracker.expected !== undefined && tracker.acked >= tracker.expected) tracker.settle?.()
  }

  close (): void {
    this.#closed = true
    clearInterval(this.#timer)
    for (const tracker of this.#trackers.values()) tracker.settle?.()
    this.#trackers.clear()
    this.#sub.disconnect()
  }
}
