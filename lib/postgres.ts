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

/** A Promise that rejects after `ms` unless `promise` settles first (`ref`: the timer keeps the process alive, as at boot). */
function within<T> (promise: Promise<T>, ms: number, what: string, ref = false): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms)
    if (!ref) timer.unref()
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

const noop = (): void => {}

/** Destroys a pg client's socket (a frozen server may never end it). */
function destroy (client: PgClient): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream
  stream?.destroy?.()
}

type PgModule = { Client: new (config: Record<string, unknown>) => PgClient }

export class PostgresFeed {
  readonly #engine: AuthzCache
  readonly #feed: FeedHandle
  readonly #o: ResolvedPostgresOptions
  readonly #log: FastifyBaseLogger
  readonly #listenSql: string
  /** The owned client's constructor (`connectionString`), loaded at start: a missing `pg` fails the boot. */
  #pg: PgModule | undefined
  /** The connection LISTENing now (pg), undefined while down. */
  #client: PgClient | undefined
  /** An owned connection being opened, until it LISTENs (close() ends it too). */
  #opening: PgClient | undefined
  #unlisten: (() => Promise<void>) | undefined
  #heartbeat: NodeJS.Timeout | undefined
  #reconnect: NodeJS.Timeout | undefined
  #backoffMs = RECONNECT_MIN_MS
  #probing = false
  /** A client you passed stopped answering the liveness query: down, but not ours to drop; up again when it answers. */
  #silent = false
  #closed = false
  /** Removes the listener's handlers from the connection it last used. */
  #detachListeners: () => void = noop
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

  /**
   * Starts listening. An owned connection that fails at boot does not fail
   * the boot: the instance stays in outage mode and retries. A client you
   * passed must LISTEN at once (it must be connected), and a missing `pg`
   * package fails the boot: neither gets better by retrying.
   */
  async start (): Promise<void> {
    const client = this.#o.client
    if (client !== undefined && isPglite(client)) {
      // PGlite runs `LISTEN ${channel}` as written: quoted, the name keeps its case.
      this.#unlisten = await client.listen(quoteIdent(this.#o.channel), (payload) => this.#receive(payload))
      this.#up()
      return
    }
    if (client === undefined) {
      try {
        this.#pg = (await import('pg')).default as unknown as PgModule
      } catch (error) {
        throw new FST_AUTHZ_OPTIONS('postgres.connectionString', 'needs the pg package (npm install pg)', { cause: error })
      }
    } else {
      this.#attach(client as PgClient)
      try {
        await within((client as PgClient).query(this.#listenSql), this.#o.connectTimeoutMs, 'LISTEN', true)
      } catch (error) {
        this.#detachListeners()
        throw new FST_AUTHZ_OPTIONS('postgres.client', `must be a connected pg.Client: LISTEN failed (${(error as Error).message})`, { cause: error })
      }
      this.#client = client as PgClient
      this.#up()
    }
    this.#heartbeat = setInterval(() => this.#probe(), this.#o.heartbeatMs)
    this.#heartbeat.unref()
    if (client === undefined) await this.#connect()
  }

  /** Listens to a client's notifications, errors and end. */
  #attach (client: PgClient): void {
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
  }

  /** Opens an owned connection and LISTENs on it. */
  async #connect (): Promise<void> {
    this.#reconnect = undefined
    if (this.#closed) return
    const client = new (this.#pg as PgModule).Client({ connectionString: this.#o.connectionString, keepAlive: true, application_name: `fastify-authz-cache ${this.#o.channel}`.slice(0, 63) })
    this.#opening = client
    this.#attach(client)
    try {
      await within(client.connect(), this.#o.connectTimeoutMs, 'PostgreSQL connect')
      await within(client.query(this.#listenSql), this.#o.connectTimeoutMs, 'LISTEN')
    } catch (error) {
      this.#lost(client, error as Error)
      return
    } finally {
      if (this.#opening === client) this.#opening = undefined
    }
    if (this.#closed) {
      this.#detachListeners()
      await this.#release(client)
      return
    }
    this.#client = client
    this.#backoffMs = RECONNECT_MIN_MS
    this.#up()
  }

  #up (): void {
    this.#stats.connected = true
    const dropped = this.#feed.up()
    this.#log.info({ channel: this.#o.channel, dropped }, 'authz cache listening for invalidations from PostgreSQL')
    // With Redis, what was committed while this connection was not listening may sit in L2 (written before
    // the change, by an instance that missed it too): retire every L2 value, and every instance's L1 with it.
    // Without Redis, dropping this L1 (above) is all there is to do.
    if (this.#engine.hasSharedLayer) this.#invalidate({ all: true })
  }

  /** The LISTEN connection is gone (error, end, a liveness query unanswered): outage mode, and a new connection when it is ours. */
  #lost (client: PgClient, error: Error): void {
    if (this.#client !== undefined && this.#client !== client) return
    const wasUp = this.#client === client
    this.#client = undefined
    this.#detachListeners()
    this.#detachListeners = noop
    const owned = this.#o.client === undefined
    // An owned connection is ended whatever happens next (close() included); an error after this must not crash the process.
    if (owned) this.#release(client).catch(noop)
    if (this.#closed) return
    this.#stats.connected = false
    if (wasUp) this.#stats.outages++
    this.#feed.down()
    if (owned) {
      this.#retry(error)
    } else {
      client.on('error', noop)
      this.#log.error({ err: error, channel: this.#o.channel }, 'the postgres.client given to the authz cache was lost: invalidations from the database are not heard, so cached entries are served only within the staleness bound until the app restarts (pass connectionString for a connection the plugin re-opens)')
    }
  }

  #retry (error: Error): void {
    if (this.#closed || this.#reconnect !== undefined) return
    this.#log.error({ err: error, channel: this.#o.channel, retryInMs: this.#backoffMs }, 'authz cache lost its PostgreSQL LISTEN connection: cached entries are served only within the staleness bound until it is back')
    this.#reconnect = setTimeout(() => { this.#connect().catch(noop) }, this.#backoffMs)
    this.#reconnect.unref()
    this.#backoffMs = Math.min(RECONNECT_MAX_MS, this.#backoffMs * 2)
  }

  /**
   * Liveness: a query on the LISTEN connection must answer within two
   * heartbeats. An owned connection that does not is dropped and re-opened
   * (a frozen server keeps its socket open). A client you passed is never
   * dropped (it is yours, and may be busy with your queries): the instance
   * goes down while it is silent and comes back, dropping its L1, when it
   * answers again.
   */
  #probe (): void {
    const client = this.#client
    if (client === undefined || this.#probing) return
    this.#probing = true
    within(client.query('SELECT 1'), this.#o.heartbeatMs * 2, 'the liveness query')
      .then(() => {
        if (this.#silent && this.#client === client && !this.#closed) {
          this.#silent = false
          this.#up()
        }
      }, (error: Error) => {
        if (this.#client !== client || this.#closed) return
        if (this.#o.client === undefined) {
          this.#lost(client, error)
          destroy(client)
        } else if (!this.#silent) {
          this.#silent = true
          this.#stats.connected = false
          this.#stats.outages++
          this.#feed.down()
          this.#log.error({ err: error, channel: this.#o.channel }, 'the postgres.client given to the authz cache did not answer its liveness query: outage mode until it does (give the cache a client of its own, used for nothing else)')
        }
      })
      .finally(() => { this.#probing = false })
  }

  #receive (payload: string): void {
    if (this.#closed) return
    this.#stats.received++
    const bytes = Buffer.byteLength(payload)
    const checked = bytes >= MAX_PAYLOAD_BYTES ? new Error(`payload of ${bytes} bytes`) : parse(payload)
    if (checked instanceof Error) {
      this.#malformed(bytes, checked.message)
      return
    }
    this.#invalidate(checked, bytes)
  }

  /** A payload that is not a valid invalidation: everything goes. The payload itself is not logged: only its size and what was wrong. */
  #malformed (bytes: number, reason: string): void {
    this.#stats.malformed++
    this.#log.error({ channel: this.#o.channel, payloadBytes: bytes, reason }, 'malformed invalidation from PostgreSQL: everything is invalidated (a lost revocation is worse than a cold cache)')
    this.#invalidate({ all: true })
  }

  /** Applied here at once (before the first await); with Redis, also published, so L2 and loads in flight elsewhere are fenced. */
  #invalidate (request: InvalidationRequest, bytes = 0): void {
    this.#engine.invalidateEverywhere(request).catch((error: Error & { code?: string }) => {
      if (error.code === 'FST_AUTHZ_BUS_FAILED') {
        this.#log.warn({ err: error, channel: this.#o.channel }, 'an invalidation from PostgreSQL was applied here; Redis did not take it yet (it stays queued)')
      } else {
        // Valid to the schema, refused by the engine (it applied nothing): fail safe.
        this.#malformed(bytes, error.message)
      }
    })
  }

  /** Ends a connection, destroying its socket if it does not end in time; an error from it afterwards is swallowed. */
  async #release (client: PgClient): Promise<void> {
    client.on('error', noop)
    await within(client.end(), 1000, 'PostgreSQL end').catch(() => destroy(client))
  }

  /** Stops listening; an owned connection is closed (one being opened too), one you passed is left open (UNLISTEN only). */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#heartbeat)
    clearTimeout(this.#reconnect)
    if (this.#unlisten !== undefined) await this.#unlisten().catch(noop)
    const client = this.#client
    this.#client = undefined
    this.#detachListeners()
    const opening = this.#opening
    if (opening !== undefined) await this.#release(opening)
    if (client === undefined) return
    if (this.#o.client === undefined) {
      await this.#release(client)
    } else {
      await within(client.query(`UNLISTEN ${quoteIdent(this.#o.channel)}`), 1000, 'UNLISTEN').catch(noop)
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
