/**
 * Invalidations from the database itself (SPEC section 9): every instance
 * LISTENs on a channel and applies each notification as an invalidation.
 * The trigger function of ./postgres-sql.ts sends one when a permission row
 * changes, so a change made by any writer (an admin's SQL, a migration,
 * another service) is revoked on every instance right after it commits:
 * PostgreSQL delivers a NOTIFY at commit, never before, and never for a
 * transaction that rolled back.
 *
 * A payload is the JSON of the admin route's body, checked by the same
 * strict validation. One that is not (bad JSON, an unknown field, a wrong
 * type, too large) invalidates everything and logs at error: a lost
 * revocation is worse than a cold cache.
 *
 * The LISTEN connection is watched like the Redis bus. NOTIFY is not
 * queued for a listener that is not connected, so while the connection is
 * down (closed, terminated, or frozen: a liveness query every `heartbeatMs`
 * must answer within twice that) the instance is in outage mode: no L1
 * entry older than the staleness bound is served. When it is back (a
 * `connectionString` connection is re-opened with backoff) every L1 entry
 * stored before is dropped.
 *
 * Clients: a `connectionString` (the plugin owns the `pg` connection,
 * reconnects it and closes it), a `pg.Client` you pass (used as is, left
 * open on close; if it is lost the instance stays in outage mode, since it
 * is not ours to reconnect), or a PGlite instance (its `listen`: in-process,
 * nothing to lose).
 */
import type { FastifyBaseLogger } from 'fastify'
import { checkInvalidation } from './admin.js'
import type { AuthzCache } from './cache.js'
import { FST_AUTHZ_OPTIONS } from './errors.js'
import type { FeedHandle } from './engine/shared.js'
import type { ResolvedPostgresOptions } from './options.js'
import { quoteIdent } from './postgres-sql.js'
import type { InvalidationRequest, PostgresStats } from './types.js'

/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; anything longer did not come from a trigger. */
export const MAX_PAYLOAD_BYTES = 8000
/** Reconnection backoff of an owned connection: from this, doubling, up to RECONNECT_MAX_MS. */
export const RECONNECT_MIN_MS = 100
export const RECONNECT_MAX_MS = 5000

/** The part of a `pg.Client` the listener uses. */
export interface PgClient {
  connect (): Promise<unknown>
  query (text: string): Promise<unknown>
  end (): Promise<unknown>
  on (event: string, listener: (...args: any[]) => void): unknown
  removeListener (event: string, listener: (...args: any[]) => void): unknown
}

/** The part of a PGlite instance the listener uses. */
export interface PgliteClient {
  listen (channel: string, callback: (payload: string) => void): Promise<() => Promise<void>>
}

function isPglite (client: unknown): client is PgliteClient {
  return typeof (client as PgliteClient | null)?.listen === 'function'
}

/** A Promise that rejects after `ms` unless `promise` settles first (the timer never keeps the process alive). */
function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)
    timer.unref()
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

export class PostgresFeed {
  readonly #engine: AuthzCache
  readonly #feed: FeedHandle
  readonly #o: ResolvedPostgresOptions
  readonly #log: FastifyBaseLogger
  readonly #listenSql: string
  /** The connection LISTENing now (pg), undefined while down. */
  #client: PgClient | undefined
  #unlisten: (() => Promise<void>) | undefined
  #heartbeat: NodeJS.Timeout | undefined
  #reconnect: NodeJS.Timeout | undefined
  #backoffMs = RECONNECT_MIN_MS
  #probing = false
  #closed = false
  /** Removes the listener's handlers from the connection it last used. */
  #detachListeners: () => void = () => {}
  readonly #stats: PostgresStats = { connected: false, received: 0, malformed: 0, outages: 0 }

  constructor (engine: AuthzCache, o: ResolvedPostgresOptions, log: FastifyBaseLogger) {
    this.#engine = engine
    this.#feed = engine.attachFeed('postgres', () => this.stats)
    this.#o = o
    this.#log = log
    this.#listenSql = `LISTEN ${quoteIdent(o.channel)}`
    // Until LISTEN is in place nothing can be heard: outage mode from the start.
    this.#feed.down()
  }

  get stats (): PostgresStats {
    return { ...this.#stats }
  }

  /** Starts listening. A `pg` connection that fails at boot does not fail the boot: the instance stays in outage mode and retries. */
  async start (): Promise<void> {
    const client = this.#o.client
    if (client !== undefined && isPglite(client)) {
      // PGlite runs `LISTEN ${channel}` as written: quoted, the name keeps its case.
      this.#unlisten = await client.listen(quoteIdent(this.#o.channel), (payload) => this.#receive(payload))
      this.#up()
      return
    }
    this.#heartbeat = setInterval(() => this.#probe(), this.#o.heartbeatMs)
    this.#heartbeat.unref()
    await this.#connect()
  }

  async #connect (): Promise<void> {
    this.#reconnect = undefined
    if (this.#closed) return
    let client: PgClient
    const owned = this.#o.client === undefined
    try {
      client = owned ? await this.#newClient() : this.#o.client as PgClient
    } catch (error) {
      this.#retry(error as Error)
      return
    }
    const onNotification = (message: { channel: string, payload?: string }): void => {
      if (message.channel === this.#o.channel) this.#receive(message.payload ?? '')
    }
    const onLost = (error?: Error): void => this.#lost(client, error ?? new Error('the connection ended'))
    client.on('notification', onNotification)
    client.on('error', onLost)
    client.on('end', onLost)
    this.#detachListeners = () => {
      client.removeListener('notification', onNotification)
      client.removeListener('error', onLost)
      client.removeListener('end', onLost)
    }
    try {
      if (owned) await within(client.connect(), this.#o.connectTimeoutMs, 'PostgreSQL connect')
      await within(client.query(this.#listenSql), this.#o.connectTimeoutMs, 'LISTEN')
    } catch (error) {
      this.#lost(client, error as Error)
      return
    }
    if (this.#closed) {
      await this.#release(client)
      return
    }
    this.#client = client
    this.#backoffMs = RECONNECT_MIN_MS
    this.#up()
  }

  async #newClient (): Promise<PgClient> {
    let pg: { Client: new (config: Record<string, unknown>) => PgClient }
    try {
      pg = (await import('pg')).default as unknown as typeof pg
    } catch (error) {
      throw new FST_AUTHZ_OPTIONS('postgres.connectionString', 'needs the pg package (npm install pg)', { cause: error })
    }
    return new pg.Client({ connectionString: this.#o.connectionString, keepAlive: true, application_name: `fastify-authz-cache ${this.#o.channel}`.slice(0, 63) })
  }

  #up (): void {
    this.#stats.connected = true
    const dropped = this.#feed.up()
    this.#log.info({ channel: this.#o.channel, dropped }, 'authz cache listening for invalidations from PostgreSQL')
  }

  /** The LISTEN connection is gone (error, end, a liveness query unanswered): outage mode, and a new connection when it is ours. */
  #lost (client: PgClient, error: Error): void {
    if (this.#client !== undefined && this.#client !== client) return
    const wasUp = this.#client === client
    this.#client = undefined
    this.#detachListeners()
    this.#detachListeners = () => {}
    // An error after this must not crash the process.
    client.on('error', () => {})
    if (this.#closed) return
    this.#stats.connected = false
    if (wasUp) this.#stats.outages++
    this.#feed.down()
    if (this.#o.client === undefined) {
      this.#release(client).catch(() => {})
      this.#retry(error)
    } else {
      this.#log.error({ err: error, channel: this.#o.channel }, 'the postgres.client given to the authz cache was lost: invalidations from the database are not heard, so cached entries are served only within the staleness bound until the app restarts (pass connectionString for a connection the plugin re-opens)')
    }
  }

  #retry (error: Error): void {
    if (this.#closed || this.#reconnect !== undefined) return
    this.#log.error({ err: error, channel: this.#o.channel, retryInMs: this.#backoffMs }, 'authz cache lost its PostgreSQL LISTEN connection: cached entries are served only within the staleness bound until it is back')
    this.#reconnect = setTimeout(() => { this.#connect().catch(() => {}) }, this.#backoffMs)
    this.#reconnect.unref()
    this.#backoffMs = Math.min(RECONNECT_MAX_MS, this.#backoffMs * 2)
  }

  /** Liveness: a query on the LISTEN connection must answer within two heartbeats, or the connection counts as lost (a frozen server keeps its socket open). */
  #probe (): void {
    const client = this.#client
    if (client === undefined || this.#probing) return
    this.#probing = true
    within(client.query('SELECT 1'), this.#o.heartbeatMs * 2, 'the liveness query')
      .catch((error: Error) => {
        if (this.#client !== client) return
        this.#lost(client, error)
        // A frozen connection may never end by itself.
        const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream
        stream?.destroy?.()
      })
      .finally(() => { this.#probing = false })
  }

  #receive (payload: string): void {
    if (this.#closed) return
    this.#stats.received++
    let request: InvalidationRequest
    const checked = Buffer.byteLength(payload) >= MAX_PAYLOAD_BYTES ? new Error(`payload of ${Buffer.byteLength(payload)} bytes`) : parse(payload)
    if (checked instanceof Error) {
      this.#stats.malformed++
      // The payload itself is not logged: only its size and what was wrong.
      this.#log.error({ channel: this.#o.channel, payloadBytes: Buffer.byteLength(payload), reason: checked.message }, 'malformed invalidation from PostgreSQL: everything is invalidated (a lost revocation is worse than a cold cache)')
      request = { all: true }
    } else {
      request = checked
    }
    // Applied here at once (before the first await); with Redis, also published, so L2 and loads in flight elsewhere are fenced.
    this.#engine.invalidateEverywhere(request).catch((error: Error) => {
      this.#log.warn({ err: error, channel: this.#o.channel }, 'an invalidation from PostgreSQL was applied here; Redis did not take it yet (it stays queued)')
    })
  }

  async #release (client: PgClient): Promise<void> {
    await within(client.end(), 1000, 'PostgreSQL end').catch(() => {})
  }

  /** Stops listening; an owned connection is closed, one you passed is left open (UNLISTEN only). */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#heartbeat)
    clearTimeout(this.#reconnect)
    if (this.#unlisten !== undefined) await this.#unlisten().catch(() => {})
    const client = this.#client
    this.#client = undefined
    this.#detachListeners()
    if (client === undefined) return
    if (this.#o.client === undefined) {
      await this.#release(client)
    } else {
      await within(client.query(`UNLISTEN ${quoteIdent(this.#o.channel)}`), 1000, 'UNLISTEN').catch(() => {})
    }
  }
}

function parse (payload: string): InvalidationRequest | Error {
  let body: unknown
  try {
    body = JSON.parse(payload)
  } catch (error) {
    return error as Error
  }
  return checkInvalidation(body)
}

/** Starts the PostgreSQL feed of an engine (the plugin calls it at register; `close()` on close). */
export async function listenPostgres (engine: AuthzCache, o: ResolvedPostgresOptions, log: FastifyBaseLogger): Promise<PostgresFeed> {
  const feed = new PostgresFeed(engine, o, log)
  await feed.start()
  return feed
}
