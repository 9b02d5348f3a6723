import { test } from 'tap'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache, { AuthzCache, authzCache as named, presets } from '../lib/index.js'
import { SECRET, buildApp } from './app.js'
import { G1, U1 } from './helpers.js'

async function bootError (options: Record<string, unknown>, routes?: (app: any) => void, jwt = true): Promise<Error & { code?: string }> {
  const app = Fastify()
  try {
    if (jwt) await app.register(fastifyJwt, { secret: SECRET })
    await app.register(authzCache, { resolvers: { generation: async () => null, document: async () => null }, ...options } as never)
    routes?.(app)
    await app.ready()
  } catch (error) {
    return error as Error & { code?: string }
  } finally {
    await app.close().catch(() => {})
  }
  throw new Error('expected a boot error')
}

test('exports: default and named plugin, the engine, presets', async (t) => {
  t.equal(authzCache, named)
  t.equal(typeof AuthzCache, 'function')
  t.equal(presets.production.maxEntries, 50_000)
})

test('bad options fail ready() with FST_AUTHZ_OPTIONS naming the option', async (t) => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ maxEntries: -1 }, 'maxEntries'],
    [{ preset: 'fast' }, 'preset'],
    [{ maxEntires: 10 }, 'maxEntires'],
    [{ roles: [] }, 'roles'],
    [{ roles: ['a', 'a'] }, 'roles'],
    [{ authenticate: 'yes' }, 'authenticate'],
    [{ getUserId: 'sub' }, 'getUserId'],
    [{ warm: [] }, 'warm'],
    [{ admin: true }, 'admin'],
    [{ admin: { prefix: 'stats' } }, 'admin.prefix'],
    [{ admin: { authorise: () => true } }, 'admin.authorise'],
    [{ admin: { authorize: 'x' } }, 'admin.authorize'],
    [{ redis: 'redis://x' }, 'redis'],
    [{ redis: {} }, 'redis'],
    [{ redis: { url: 'redis://127.0.0.1:6379', l2: 'yes' } }, 'redis.l2'],
    [{ redis: { client: {} } }, 'redis.client'],
    [{ redis: { url: 'redis://127.0.0.1:6379', prefix: 'x' } }, 'redis.prefix'],
    [{ resolvers: { generation: 'db' } }, 'resolvers.generation'],
    [{ postgres: 'postgres://x' }, 'postgres'],
    [{ postgres: {} }, 'postgres'],
    [{ postgres: { connectionString: 'postgres://x', client: { listen: () => {} } } }, 'postgres'],
    [{ postgres: { connectionString: '' } }, 'postgres.connectionString'],
    [{ postgres: { client: { query: () => {}, connect: () => {}, on: () => {}, totalCount: 0 } } }, 'postgres.client'],
    [{ postgres: { client: {} } }, 'postgres.client'],
    [{ postgres: { connectionString: 'postgres://x', channel: 'c'.repeat(64) } }, 'postgres.channel'],
    [{ postgres: { connectionString: 'postgres://x', channel: 'a"b' } }, 'postgres.channel'],
    [{ postgres: { connectionString: 'postgres://x', heartbeatMs: 0 } }, 'postgres.heartbeatMs'],
    [{ postgres: { connectionString: 'postgres://x', listen: true } }, 'postgres.listen']
  ]
  for (const [options, name] of cases) {
    const error = await bootError(options)
    t.equal(error.code, 'FST_AUTHZ_OPTIONS', name)
    t.match(error.message, `Invalid option ${name}`, name)
  }
})

test('without @fastify/jwt, authenticate and the default admin guard fail at boot', async (t) => {
  t.match((await bootError({}, undefined, false)).message, 'Invalid option authenticate')
  t.match((await bootError({ authenticate: false }, undefined, false)).message, 'Invalid option admin')
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(authzCache, { authenticate: false, admin: false, resolvers: { generation: async () => ({ granted: true }) } })
  await app.ready()
  t.ok(app.authz instanceof AuthzCache, 'fine with neither')
})

test('bad route checks fail at boot with FST_AUTHZ_ROUTE_CONFIG naming the route', async (t) => {
  const handler = async (): Promise<string> => 'x'
  const cases: Array<[string, unknown, string]> = [
    ['/a/:id', { generaton: 'id', access: 'read' }, 'unknown kind or field "generaton"'],
    ['/a/:id', { generation: 'id', acess: 'read' }, 'names 2 kinds'],
    ['/a/:id', { generation: 'id' }, 'needs `access` or `role`'],
    ['/a/:id', { generation: 'gid', access: 'read' }, 'route param "gid" is not in the route path'],
    ['/a/:id', { generation: 'id', role: 'king' }, 'role must be one of'],
    ['/a/:id', { generation: 'id', access: '' }, 'access must be a non-empty string'],
    ['/a/:id', { generation: 'id', access: 'read', fresh: 'yes' }, 'fresh must be a boolean'],
    ['/a/:id', { generation: 5, access: 'read' }, 'generation must be a route param name or a function'],
    ['/a/:id', { access: 'read' }, 'names no kind'],
    ['/a/:id', { team: 'id', access: 'read' }, 'unknown kind or field "team"'],
    ['/a/:id', [], 'an empty list of checks'],
    ['/a/:id', 'generation', 'a check must be an object'],
    ['/a/:id', [{ generation: 'id', access: 'read' }, { document: 'nope', access: 'read' }], '(check 1): route param "nope"']
  ]
  for (const [url, authz, message] of cases) {
    const error = await bootError({}, (app) => app.get(url, { config: { authz } }, handler))
    t.equal(error.code, 'FST_AUTHZ_ROUTE_CONFIG', message)
    t.match(error.message, `GET ${url}`)
    t.match(error.message, message)
  }
  const required = await bootError({}, (app) => app.post('/x', { preHandler: app.authz.require({ generation: 'id', role: 'wizard' }) }, handler))
  t.equal(required.code, 'FST_AUTHZ_ROUTE_CONFIG')
  t.match(required.message, 'app.authz.require()')
})

test('regex and wildcard params are known to route checks', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, (a) => {
    a.get('/g/:generationId(^[0-9a-f-]+$)', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => 'ok')
    a.get('/files/*', { config: { authz: { document: '*', access: 'read' } } }, async () => 'ok')
  })
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  db.table.set(`document:a/b.txt:${U1}`, { granted: true })
  t.equal((await app.inject({ url: `/g/${G1}`, headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ url: '/files/a/b.txt', headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ url: '/files/c.txt', headers: auth(U1) })).statusCode, 403)
})

test('close() stops timers, clears the cache and ends loads quietly', async (t) => {
  const app = Fastify()
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(authzCache, { cleanupIntervalSeconds: 1, resolvers: { generation: async () => ({ granted: true }) } })
  await app.ready()
  await app.authz.getOrLoad('generation', U1, G1)
  t.equal(app.authz.getStats().totalEntries, 1)
  await app.close()
  t.equal(app.authz.getStats().totalEntries, 0)
  app.authz.setGenerationAccess(G1, U1, { granted: true })
  t.equal(app.authz.getStats().totalEntries, 0, 'a closed cache stores nothing')
})

test('warming: the warm option runs at onReady when warmingEnabled', async (t) => {
  let calls = 0
  const warm = async (): Promise<Array<{ kind: string, userId: string, id: string, decision: { granted: boolean } }>> => {
    calls++
    return [{ kind: 'generation', userId: U1, id: G1, decision: { granted: true } }]
  }
  const on = await buildApp(t, { warmingEnabled: true, warm })
  t.equal(on.app.authz.getGenerationAccess(G1, U1).hit, true)
  const off = await buildApp(t, { warmingEnabled: false, warm })
  t.equal(off.app.authz.getGenerationAccess(G1, U1).hit, false)
  t.equal(calls, 1)
  t.equal(await off.app.authz.warm(await warm()), 1, 'app.authz.warm any time')
  t.equal(off.app.authz.getGenerationAccess(G1, U1).hit, true)
})

test('production preset applies through the plugin, explicit options win', async (t) => {
  const { app } = await buildApp(t, { preset: 'production', maxEntries: 123 })
  const stats = app.authz.getStats()
  t.equal(stats.maxEntries, 123)
  t.equal(stats.maxSizeMb, 256)
  t.equal(stats.performanceTargets.targetAccessTimeMs, 3)
})
