import { createServer, connect, type Server, type Socket } from 'node:net'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import type { FastifyBaseLogger } from 'fastify'
import type { ResolvedRedisOptions } from '../lib/options.js'

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

/**
 * Whether the Redis tests can run. In CI (`AUTHZ_REQUIRE_REDIS=1`, set by
 * .ci/run) a missing Redis is a failure, not a skip.
 */
export async function redisAvailable (): Promise<string | false> {
  const client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 1000, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return REDIS_URL
  } catch (error) {
    if (process.env.AUTHZ_REQUIRE_REDIS === '1') throw new Error(`Redis is required here but ${REDIS_URL} does not answer: ${(error as Error).message}`)
    return false
  } finally {
    client.disconnect()
  }
}

/** A key prefix and channel of its own for one test, and a cleanup of its keys. */
export function namespace (): { keyPrefix: string, channel: string, cleanup: () => Promise<void>, raw: Redis } {
  const id = randomUUID()
  const keyPrefix = `authz-test:${id}:`
  const raw = new Redis(REDIS_URL)
  return {
    keyPrefix,
    channel: `authz-test:${id}:bus`,
    raw,
    cleanup: async () => {
      let cursor = '0'
      do {
        const [next, keys] = await raw.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000)
        cursor = next
        if (keys.length > 0) await raw.del(...keys)
      } while (cursor !== '0')
      await raw.quit()
    }
  }
}

/** Polls `check` until it is true (bounded: fails after `ms`). For propagation over the bus, not for timing. */
export async function eventually (check: () => boolean | Promise<boolean>, ms = 3000): Promise<boolean> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return true
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return false
}

/** A TCP proxy to Redis that a test can cut and restore, to stage an outage of one instance. */
export async function redisProxy (): Promise<{ url: string, cut: () => Promise<void>, restore: () => Promise<void>, close: () => Promise<void> }> {
  const target = new URL(REDIS_URL)
  const sockets = new Set<Socket>()
  let server: Server
  const listen = (port: number): Promise<number> => new Promise((resolve, reject) => {
    server = createServer((client) => {
      const upstream = connect(Number(target.port || 6379), target.hostname)
      sockets.add(client)
      sockets.add(upstream)
      const drop = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
      client.on('error', drop).on('close', drop)
      upstream.on('error', drop).on('close', drop)
      client.pipe(upstream).pipe(client)
    })
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve((server.address() as { port: number }).port))
  })
  const port = await listen(0)
  const cut = async (): Promise<void> => {
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      for (const socket of sockets) socket.destroy()
      sockets.clear()
    })
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    cut,
    restore: async () => { await listen(port) },
    close: async () => { if (server.listening) await cut() }
  }
}

/** The resolved `redis` options of a test that attaches `connectRedis` to an engine itself: its namespace, then what the test overrides. */
export function resolvedRedis (ns: { keyPrefix: string, channel: string }, overrides: Partial<ResolvedRedisOptions> = {}): ResolvedRedisOptions {
  return {
    client: undefined,
    url: REDIS_URL,
    l2: true,
    bus: true,
    keyPrefix: ns.keyPrefix,
    channel: ns.channel,
    busOutageMaxStalenessSeconds: 5,
    commandTimeoutMs: 1000,
    heartbeatMs: 1000,
    ackTimeoutMs: 1000,
    ...overrides
  }
}

/** A logger that drops everything (what `connectRedis` logs is not what these tests check). */
export const silentLogger: FastifyBaseLogger = (() => {
  const noop = (): void => {}
  const log = { level: 'silent', fatal: noop, error: noop, warn: noop, info: noop, debug: noop, trace: noop, silent: noop, child: () => log }
  return log as unknown as FastifyBaseLogger
})()
