/**
 * A route with `config.authz` never runs unprotected, whatever the order in
 * which the plugin, the routes and child plugins were registered (SPEC
 * section 4). Each shape below answered 200 without a token before the
 * application-wide guard existed.
 */
import { test } from 'tap'

type Assert = (...args: any[]) => unknown
interface T { ok: Assert, not: Assert, same: Assert, equal: Assert }
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache from '../lib/index.js'
import { SECRET } from './app.js'
import { G1, U1, tableResolver } from './helpers.js'

const check = { generation: 'generationId', access: 'read' } as const

interface Shape {
  app: FastifyInstance
  db: ReturnType<typeof tableResolver>
  handled: string[]
}

function setup (t: { teardown: (fn: () => unknown) => void }): Shape {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  const db = tableResolver()
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'] })
  return { app, db, handled: [] }
}

function plugin (db: ReturnType<typeof tableResolver>): Record<string, unknown> {
  return { cleanupIntervalSeconds: 0, resolvers: { generation: db.resolver } }
}

function route (app: FastifyInstance, handled: string[], url = '/g/:generationId'): void {
  app.get(url, { config: { authz: check } }, async () => {
    handled.push(url)
    return { ok: true }
  })
}

/** The same four requests for every shape: anonymous, wrong secret, alg none, and a real grant. */
async function attack (t: T, shape: Shape, url = `/g/${G1}`, protectedRuns = true): Promise<void> {
  const { app, handled } = shape
  const wrongSecret = Fastify()
  await wrongSecret.register(fastifyJwt, { secret: 'another-secret-another-secret-another' })
  await wrongSecret.ready()
  const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')
  const body = Buffer.from(JSON.stringify({ sub: U1 })).toString('base64url')
  const cases: Array<[string, Record<string, string>]> = [
    ['no token', {}],
    ['wrong secret', { authorization: `Bearer ${wrongSecret.jwt.sign({ sub: U1 })}` }],
    ['alg none', { authorization: `Bearer ${header}.${body}.` }]
  ]
  await wrongSecret.close()
  for (const [name, headers] of cases) {
    const res = await app.inject({ url, headers })
    t.ok(res.statusCode >= 400, `${name}: refused (${res.statusCode})`)
    t.not(res.statusCode, 200, `${name}: never answered as if unprotected`)
  }
  t.same(handled, [], 'the handler never ran for a refused request')
  if (protectedRuns) {
    const res = await app.inject({ url, headers: { authorization: `Bearer ${app.jwt.sign({ sub: U1 })}` } })
    t.equal(res.statusCode, 200, 'a granted caller gets through: the checks ran')
    t.equal(handled.length, 1)
  }
}

test('route declared before the plugin: its checks run (it answered 200 without a token)', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  route(app, handled)
  await app.register(authzCache, plugin(db))
  await app.ready()
  await attack(t, shape)
  t.equal(db.calls.length, 1, 'the resolver decided the granted request')
})

test('register() without await, then app.get(): its checks run (it answered 200 without a token)', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  app.register(fastifyJwt, { secret: SECRET })
  app.register(authzCache, plugin(db))
  route(app, handled)
  await app.ready()
  await attack(t, shape)
})

test('a route module registered before the plugin: its checks run (it answered 200 without a token)', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(async function routes (child) { route(child, handled) }, { prefix: '/v1' })
  await app.register(authzCache, plugin(db))
  await app.ready()
  await attack(t, shape, `/v1/g/${G1}`)
})

test('a sibling context created after the plugin: the boot fails naming the route (it answered 200 without a token)', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(async function authzContext (child) {
    await child.register(authzCache, plugin(db))
  })
  await app.register(async function sibling (child) { route(child, handled) })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_AUTHZ_ROUTE_UNPROTECTED', message: /GET \/g\/:generationId/ })
})

test('a sibling context created before the plugin: 500 FST_AUTHZ_ROUTE_UNPROTECTED on every request, never 200', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(async function sibling (child) { route(child, handled) })
  await app.register(async function authzContext (child) {
    await child.register(authzCache, plugin(db))
    route(child, handled, '/inside/:generationId')
  })
  await app.ready()
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ url: `/g/${G1}`, headers: { authorization: `Bearer ${app.jwt.sign({ sub: U1 })}` } })
    t.equal(res.statusCode, 500, 'even a real grant cannot reach a route no plugin instance covers')
    t.equal(res.json().code, 'FST_AUTHZ_ROUTE_UNPROTECTED')
    t.match(res.json().message, '/g/:generationId')
  }
  await attack(t, shape, `/g/${G1}`, false)
  t.same(handled, [])
  const inside = await app.inject({ url: `/inside/${G1}`, headers: { authorization: `Bearer ${app.jwt.sign({ sub: U1 })}` } })
  t.equal(inside.statusCode, 200, 'the plugin\'s own context still works')
})

test('a bad check on a route declared before its own plugin instance, in a context created after the first one, fails the boot', async (t) => {
  const shape = setup(t)
  const { app, db } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(async function first (child) {
    await child.register(authzCache, { ...plugin(db), admin: false })
  })
  await app.register(async function second (child) {
    child.get('/y/:id', { config: { authz: { generation: 'nope', access: 'read' } } }, async () => 'ran')
    await child.register(authzCache, { ...plugin(db), admin: false })
  })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_AUTHZ_ROUTE_CONFIG', message: /GET \/y\/:id/ })
})

test('a late route with an invalid check fails closed with FST_AUTHZ_ROUTE_CONFIG at its first request', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  app.get('/bad/:id', { config: { authz: { nosuchkind: 'id', access: 'read' } as never } }, async () => { handled.push('bad'); return 'ran' })
  app.get('/null/:id', { config: { authz: null as never } }, async () => { handled.push('null'); return 'ran' })
  await app.register(authzCache, plugin(db))
  await app.ready()
  for (const url of ['/bad/x', '/null/x']) {
    const res = await app.inject({ url, headers: { authorization: `Bearer ${app.jwt.sign({ sub: U1 })}` } })
    t.equal(res.statusCode, 500, url)
    t.equal(res.json().code, 'FST_AUTHZ_ROUTE_CONFIG', url)
  }
  t.same(handled, [])
})

test('late routes: authz false and routes without config.authz are untouched; HEAD is checked too', async (t) => {
  const shape = setup(t)
  const { app, db, handled } = shape
  await app.register(fastifyJwt, { secret: SECRET })
  app.get('/open', { config: { authz: false } }, async () => 'open')
  app.get('/plain', async () => 'plain')
  route(app, handled)
  await app.register(authzCache, plugin(db))
  await app.ready()
  t.equal((await app.inject('/open')).statusCode, 200)
  t.equal((await app.inject('/plain')).statusCode, 200)
  t.equal((await app.inject({ method: 'HEAD', url: `/g/${G1}` })).statusCode, 401, 'the HEAD twin of a late GET is checked')
})

test('two plugin instances in sibling contexts each own their late routes', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  const a = tableResolver()
  const b = tableResolver()
  a.table.set(`generation:${G1}:${U1}`, { granted: true })
  await app.register(fastifyJwt, { secret: SECRET })
  for (const [prefix, db] of [['/a', a], ['/b', b]] as const) {
    await app.register(async function context (child) {
      child.get('/g/:generationId', { config: { authz: check } }, async () => prefix)
      await child.register(authzCache, { ...plugin(db), admin: false })
    }, { prefix })
  }
  await app.ready()
  const auth = { authorization: `Bearer ${app.jwt.sign({ sub: U1 })}` }
  t.equal((await app.inject({ url: `/a/g/${G1}`, headers: auth })).statusCode, 200, 'A grants')
  t.equal((await app.inject({ url: `/b/g/${G1}`, headers: auth })).statusCode, 403, 'B denies: its own resolver decided')
  t.equal(a.calls.length, 1)
  t.equal(b.calls.length, 1)
})
