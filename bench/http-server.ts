/**
 * The server side of bench/http.ts: one Fastify process per scenario run.
 *
 *     node dist/bench/http-server.js <scenario> <port>
 *
 * Port 0 picks a free port. Every scenario serves the same route,
 * `GET /generations/:generationId/media`, with the same handler, behind
 * @fastify/jwt (`verify: { cache: true }`) and `logger: false`; only the
 * onRequest work differs. The route is declared in a route module (an
 * encapsulated context registered on the root), as an application's
 * routes/ folder declares its routes. Three more scenarios, outside
 * SCENARIOS (bench/instructions.ts uses them, bench/http.ts does not):
 * `plugin+handler`, the `plugin` app whose handler also awaits
 * `request.authz.generationAccess(id)` and answers 403 unless it grants
 * 'read'; `jwt+plugin`, the `jwt` route (no `config.authz`) in an app
 * with the plugin registered and its cache warmed as in `plugin`; and
 * `jwt-flat`, the `jwt` app with its route declared on the root instance
 * (the one app shape whose boot skips avvio's ready queue). The
 * server warms whatever cache it has for every bench id before it reports
 * ready: over IPC (`{ type: 'ready', port }`) when forked, and as a
 * `ready <port>` line on stdout.
 *
 * Over IPC, `{ type: 'mark' }` (answered with `{ type: 'marked' }`) starts
 * the CPU clock of the measured run, and `{ type: 'stop' }` is answered with
 * `{ type: 'stats', ... }` before the process exits; SIGTERM/SIGINT close it
 * too.
 */
import { createHmac, randomUUID } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { createCache } from 'async-cache-dedupe'
import { Redis } from 'ioredis'
import authzCache from '../lib/index.js'
import type { Decision, ResolverContext } from '../lib/index.js'

export const SCENARIOS = ['jwt', 'plugin', 'dedupe', 'nocache', 'plugin-bus'] as const
export type Scenario = typeof SCENARIOS[number]
/** Scenarios this server can run besides SCENARIOS (the ones bench/http.ts runs). */
export const EXTRA_SCENARIOS = ['plugin+handler', 'jwt+plugin', 'jwt-flat'] as const
export type AnyScenario = Scenario | typeof EXTRA_SCENARIOS[number]

export const JWT_SECRET = 'http-bench-secret-that-is-long-enough-for-hs256'
export const USER_ID = 'user-4242'
export const ROUTE = '/generations/:generationId/media'
/** Simulated latency of the authorization backend (a resolver call), in ms. */
export const BACKEND_MS = 2
/** Default number of distinct generation ids the load rotates over. */
export const DEFAULT_IDS = 1000

/** The bench ids: `gen-000000` ... (all granted to USER_ID). */
export function generationIds (count: number): string[] {
  return Array.from({ length: count }, (_, i) => `gen-${String(i).padStart(6, '0')}`)
}

/** HS256 token for USER_ID, deterministic for a given `iat` (one token for every scenario of a run). */
export function benchToken (iat: number = Math.floor(Date.now() / 1000)): string {
  const part = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: USER_ID, iat })}`
  return `${unsigned}.${createHmac('sha256', JWT_SECRET).update(unsigned).digest('base64url')}`
}

export interface ServerOptions {
  /** Distinct ids to warm. */
  ids?: number
  /** `plugin-bus` only. */
  redisUrl?: string
  /** `plugin-bus` only: keys go under `authz-bench:<tag>:`, the channel is `authz-bench:<tag>`. Default: random. */
  redisTag?: string
  /**
   * Ids warmed at once. Default: all of them. Under valgrind a thousand
   * concurrent loads outlast the resolver timeout; the app is the same either way.
   */
  warmBatch?: number
}

export interface ServerStats {
  /** Resolver calls since the server reported ready (0 when every check was a cache hit). */
  resolverCallsAfterReady: number
  /** CPU time (user + system, µs) of this process since the last `mark` message, or since ready. */
  cpuMicros: number
  /** Wall time (ms) over the same span. */
  wallMs: number
  /** The plugin's engine counters since ready (plugin scenarios only). */
  engine?: { hits: number, misses: number, loads: number, totalEntries: number }
}

const GRANT: Decision = Object.freeze({ granted: true, access: Object.freeze(['read']) as string[] })

type Done = (error?: Error) => void
interface JwtRequest {
  jwtVerify: (options: undefined, callback: (error: Error | null) => void) => void
  user?: { sub?: string }
}
interface MediaRequest { Params: { generationId: string } }

function forbidden (): Error {
  return Object.assign(new Error('generation access \'read\' required'), { statusCode: 403 })
}

/** The same handler in every scenario. */
async function media (request: FastifyRequest<MediaRequest>): Promise<{ generationId: string, media: string }> {
  return { generationId: request.params.generationId, media: 'ok' }
}

/** `plugin+handler`: the handler asks `request.authz` too, as a handler reading the decision would. */
async function mediaWithDecision (request: FastifyRequest<MediaRequest>): Promise<{ generationId: string, media: string }> {
  const generationId = request.params.generationId
  if (!grantsRead(await request.authz.generationAccess(generationId))) throw forbidden()
  return { generationId, media: 'ok' }
}

/** The same read check in the hand-written scenarios as `{ access: 'read' }` in the plugin. */
function grantsRead (decision: Decision | null | undefined): boolean {
  return decision?.granted === true && (!Array.isArray(decision.access) || decision.access.includes('read'))
}

export interface BenchServer {
  app: FastifyInstance
  /** Resolver calls since the app was warmed. */
  counter: { calls: number }
  /** Engine counters when the app was warmed (plugin scenarios). */
  baseline: { hits: number, misses: number, loads: number } | undefined
  /** After `app.close()`: removes this server's Redis keys (`plugin-bus`). */
  cleanup: () => Promise<void>
}

/** Builds (and warms) the app of one scenario. */
export async function buildServer (scenario: AnyScenario, options: ServerOptions = {}): Promise<BenchServer> {
  const ids = generationIds(options.ids ?? DEFAULT_IDS)
  const counter = { calls: 0 }
  // The authorization backend: every bench id granted, BACKEND_MS per call.
  const resolver = (ctx: Pick<ResolverContext, 'userId' | 'id'>): Promise<Decision | null> => {
    counter.calls++
    return new Promise((resolve) => setTimeout(resolve, BACKEND_MS, ctx.userId === USER_ID ? GRANT : null))
  }

  const app = Fastify({ logger: false })
  await app.register(fastifyJwt, { secret: JWT_SECRET, verify: { cache: true } })

  let onRequest: ((request: FastifyRequest, reply: FastifyReply, done: Done) => void) | undefined
  let warm: () => Promise<unknown> = async () => {}
  let cleanup = async (): Promise<void> => {}

  if (scenario === 'jwt' || scenario === 'jwt-flat' || scenario === 'jwt+plugin') {
    onRequest = function jwtOnly (request, _reply, done) {
      (request as unknown as JwtRequest).jwtVerify(undefined, (error) => { error ? done(error) : done() })
    }
  }
  const registersPlugin = scenario === 'plugin' || scenario === 'plugin-bus' || scenario === 'plugin+handler' || scenario === 'jwt+plugin'
  if (registersPlugin) {
    const tag = options.redisTag ?? randomUUID()
    const redisUrl = options.redisUrl ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
    await app.register(authzCache, {
      preset: 'production',
      admin: false,
      resolvers: { generation: resolver },
      ...(scenario === 'plugin-bus'
        ? {
            redis: {
              url: redisUrl,
              keyPrefix: `authz-bench:${tag}:`,
              channel: `authz-bench:${tag}`
            }
          }
        : {})
    })
    const batch = Math.max(1, options.warmBatch ?? ids.length)
    warm = async () => {
      for (let i = 0; i < ids.length; i += batch) await Promise.all(ids.slice(i, i + batch).map((id) => app.authz.getOrLoad('generation', USER_ID, id)))
    }
    if (scenario === 'plugin-bus') cleanup = async () => { await deleteKeys(redisUrl, `authz-bench:${tag}:`) }
  } else if (scenario === 'dedupe') {
    const cache = createCache({ ttl: 600, storage: { type: 'memory', options: { size: Math.max(50_000, ids.length) } } })
      .define('generation', {
        serialize: (args: { generationId: string, userId: string }) => `${args.generationId}:${args.userId}`
      }, (args: { generationId: string, userId: string }) => resolver({ id: args.generationId, userId: args.userId }))
    onRequest = function dedupeCheck (request, _reply, done) {
      const jwtRequest = request as unknown as JwtRequest
      jwtRequest.jwtVerify(undefined, (error) => {
        if (error) {
          done(error)
          return
        }
        const generationId = (request.params as { generationId: string }).generationId
        cache.generation({ generationId, userId: jwtRequest.user?.sub as string }).then(
          (decision) => { grantsRead(decision) ? done() : done(forbidden()) },
          done
        )
      })
    }
    warm = () => Promise.all(ids.map((generationId) => cache.generation({ generationId, userId: USER_ID })))
  } else if (scenario === 'nocache') {
    onRequest = function noCacheCheck (request, _reply, done) {
      const jwtRequest = request as unknown as JwtRequest
      jwtRequest.jwtVerify(undefined, (error) => {
        if (error) {
          done(error)
          return
        }
        const id = (request.params as { generationId: string }).generationId
        resolver({ id, userId: jwtRequest.user?.sub as string }).then(
          (decision) => { grantsRead(decision) ? done() : done(forbidden()) },
          done
        )
      })
    }
  } else if (scenario !== 'jwt' && scenario !== 'jwt-flat') {
    throw new Error(`unknown scenario ${JSON.stringify(scenario)} (known: ${[...SCENARIOS, ...EXTRA_SCENARIOS].join(', ')})`)
  }

  const checked = scenario === 'plugin' || scenario === 'plugin-bus' || scenario === 'plugin+handler'
  const routes = (instance: FastifyInstance): void => {
    instance.get<MediaRequest>(ROUTE, {
      ...(onRequest === undefined ? {} : { onRequest }),
      config: checked ? { authz: { generation: 'generationId', access: 'read' } } : {}
    }, scenario === 'plugin+handler' ? mediaWithDecision : media)
  }
  // The route lives in a route module (an encapsulated context), as in an
  // application's routes/ folder; `jwt-flat` declares it on the root instead.
  if (scenario === 'jwt-flat') routes(app)
  else app.register(async function mediaRoutes (instance) { routes(instance) })

  await app.ready()
  await warm()
  counter.calls = 0
  const baseline = registersPlugin ? app.authz.getStats() : undefined
  return { app, counter, baseline, cleanup }
}

/** Deletes every key under `prefix`. */
export async function deleteKeys (url: string, prefix: string): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 1000 })
  client.on('error', () => {})
  let removed = 0
  try {
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) removed += await client.del(...keys)
    } while (cursor !== '0')
  } finally {
    client.disconnect()
  }
  return removed
}

function stats (server: BenchServer, mark: Mark): ServerStats {
  const cpu = process.cpuUsage(mark.cpu)
  const result: ServerStats = {
    resolverCallsAfterReady: server.counter.calls,
    cpuMicros: cpu.user + cpu.system,
    wallMs: performance.now() - mark.wall
  }
  const base = server.baseline
  if (base !== undefined) {
    const s = server.app.authz.getStats()
    result.engine = { hits: s.hits - base.hits, misses: s.misses - base.misses, loads: s.loads - base.loads, totalEntries: s.totalEntries }
  }
  return result
}

interface Mark { cpu: NodeJS.CpuUsage, wall: number }

async function main (): Promise<void> {
  const scenario = process.argv[2] as AnyScenario
  const port = Number(process.argv[3] ?? 0)
  const known: readonly string[] = [...SCENARIOS, ...EXTRA_SCENARIOS]
  if (!known.includes(scenario) || !Number.isInteger(port) || port < 0) {
    console.error(`usage: node dist/bench/http-server.js <${known.join('|')}> <port>`)
    process.exit(2)
  }
  const server = await buildServer(scenario, {
    ids: process.env.AUTHZ_BENCH_IDS === undefined ? undefined : Number(process.env.AUTHZ_BENCH_IDS),
    redisTag: process.env.AUTHZ_BENCH_REDIS_TAG
  })
  const app = server.app
  await app.listen({ host: '127.0.0.1', port })
  const address = app.server.address()
  const actual = typeof address === 'object' && address !== null ? address.port : port

  // `mark` (sent just before the measured run) restarts the CPU clock the stats report.
  let mark: Mark = { cpu: process.cpuUsage(), wall: performance.now() }
  let closing = false
  const stop = async (): Promise<void> => {
    if (closing) return
    closing = true
    const snapshot = stats(server, mark)
    const send = process.send?.bind(process)
    if (send !== undefined) await new Promise<void>((resolve) => send({ type: 'stats', ...snapshot }, undefined, {}, () => resolve()))
    await app.close()
    await server.cleanup().catch((error: Error) => console.error(`authz-bench: Redis cleanup failed: ${error.message}`))
    process.disconnect?.()
    process.exit(0)
  }
  process.on('message', (message: { type?: string }) => {
    if (message?.type === 'mark') {
      mark = { cpu: process.cpuUsage(), wall: performance.now() }
      process.send?.({ type: 'marked' })
    } else if (message?.type === 'stop') {
      stop().catch(() => process.exit(1))
    }
  })
  process.on('disconnect', () => { stop().catch(() => process.exit(1)) })
  process.once('SIGTERM', () => { stop().catch(() => process.exit(1)) })
  process.once('SIGINT', () => { stop().catch(() => process.exit(1)) })

  if (process.send !== undefined) process.send({ type: 'ready', port: actual })
  else console.log(`ready ${actual}`)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    console.error(error)
    process.exit(1)
  })
}
