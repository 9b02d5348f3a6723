import { test } from 'tap'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { Writable } from 'node:stream'
import authzCache from '../lib/index.js'
import { SECRET, buildApp } from './app.js'
import { G1, G2, U1, U2 } from './helpers.js'

test('request.authz on a route without config.authz authenticates on first use', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, (a) => {
    a.get('/g/:id', async (request) => {
      const before = request.authz.userId
      const decision = await request.authz.generationAccess((request.params as { id: string }).id)
      return { before: before ?? null, after: request.authz.userId, decision }
    })
  })
  db.table.set(`generation:${G1}:${U1}`, { granted: true, mediaUrls: ['a.png'] })
  const res = await app.inject({ url: `/g/${G1}`, headers: auth(U1) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { before: null, after: U1, decision: { granted: true, mediaUrls: ['a.png'] } })
  const anonymous = await app.inject({ url: `/g/${G1}` })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().code, 'FST_AUTHZ_UNAUTHENTICATED')
  t.same((await app.inject({ url: `/g/${G2}`, headers: auth(U1) })).json().decision, { granted: false }, 'unknown: a denial, never null')
  t.equal(db.calls.length, 2)
})

test('request.authz: every method, can() and check()', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, (a) => {
    a.get('/all', async (request) => {
      const authz = request.authz
      t.equal(request.authz, authz, 'built once per request')
      return {
        generation: await authz.generationAccess(G1),
        project: await authz.projectAccess('p1'),
        team: await authz.teamRole('t1'),
        profile: await authz.profile(),
        canRead: await authz.can('generation', G1, { access: 'read' }),
        canWrite: await authz.can('generation', G1, { access: 'write' }),
        isAdmin: await authz.can('team', 't1', { role: 'admin' }),
        isOwner: await authz.can('team', 't1', { role: 'owner' }),
        checked: await authz.check({ project: 'p1', access: 'read' })
      }
    })
    a.get('/forbidden', async (request) => request.authz.check({ generation: G1, access: 'delete' }))
    a.get('/unknown-kind', async (request) => request.authz.can('invoice' as never, 'i1'))
    a.get('/bad-id', async (request) => request.authz.generationAccess(42 as never))
  })
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'] })
  db.table.set(`project:p1:${U1}`, { granted: true })
  db.table.set(`team:t1:${U1}`, { granted: true, role: 'admin' })
  db.table.set(`profile:${U1}:${U1}`, { granted: true, name: 'Ada' })
  const res = await app.inject({ url: '/all', headers: auth(U1) })
  t.equal(res.statusCode, 200)
  t.same(res.json(), {
    generation: { granted: true, access: ['read'] },
    project: { granted: true },
    team: { granted: true, role: 'admin' },
    profile: { granted: true, name: 'Ada' },
    canRead: true,
    canWrite: false,
    isAdmin: true,
    isOwner: false,
    checked: { granted: true }
  })
  t.equal(db.calls.length, 4, 'each decision loaded once')
  const forbidden = await app.inject({ url: '/forbidden', headers: auth(U1) })
  t.equal(forbidden.statusCode, 403)
  t.equal(forbidden.json().code, 'FST_AUTHZ_FORBIDDEN')
  t.equal((await app.inject({ url: '/unknown-kind', headers: auth(U1) })).json().code, 'FST_AUTHZ_UNKNOWN_KIND')
  const badId = await app.inject({ url: '/bad-id', headers: auth(U1) })
  t.equal(badId.statusCode, 400)
  t.equal(badId.json().code, 'FST_AUTHZ_BAD_ID')
})

test('request.authz is never shared between requests', async (t) => {
  const seen = new Set<unknown>()
  const { app, db, auth } = await buildApp(t, {}, (a) => {
    a.get('/me', async (request) => {
      seen.add(request.authz)
      const profile = await request.authz.profile()
      return { user: request.authz.userId, profile }
    })
  })
  db.table.set(`profile:${U1}:${U1}`, { granted: true, name: 'Ada' })
  db.table.set(`profile:${U2}:${U2}`, { granted: true, name: 'Bo' })
  const [a, b] = await Promise.all([app.inject({ url: '/me', headers: auth(U1) }), app.inject({ url: '/me', headers: auth(U2) })])
  t.same(a.json(), { user: U1, profile: { granted: true, name: 'Ada' } })
  t.same(b.json(), { user: U2, profile: { granted: true, name: 'Bo' } })
  t.equal(seen.size, 2)
})

test('app.authz.require: a preHandler for ids from the body', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, (a) => {
    a.post('/projects/:projectId/generations', {
      preHandler: a.authz.require({ project: (req) => (req.body as { projectId?: string })?.projectId, access: 'write' })
    }, async () => ({ created: true }))
    a.post('/many', {
      preHandler: a.authz.require([{ project: (req) => (req.body as { p: string }).p, access: 'write' }, { team: (req) => (req.body as { t: string }).t, role: 'admin' }])
    }, async () => ({ ok: true }))
  })
  db.table.set(`project:p1:${U1}`, { granted: true, access: ['read', 'write'] })
  db.table.set(`project:p2:${U1}`, { granted: true, access: ['read'] })
  db.table.set(`team:t1:${U1}`, { granted: true, role: 'owner' })
  const post = (url: string, body: unknown, headers = auth(U1)): Promise<{ statusCode: number, json: () => any }> =>
    app.inject({ method: 'POST', url, headers, payload: body as object })
  t.equal((await post('/projects/x/generations', { projectId: 'p1' })).statusCode, 200)
  t.equal((await post('/projects/x/generations', { projectId: 'p2' })).statusCode, 403)
  const missing = await post('/projects/x/generations', { other: 1 })
  t.equal(missing.statusCode, 400)
  t.equal(missing.json().code, 'FST_AUTHZ_BAD_ID')
  t.equal((await post('/projects/x/generations', { projectId: 'p1' }, {} as never)).statusCode, 401)
  t.equal((await post('/many', { p: 'p1', t: 't1' })).statusCode, 200)
  t.equal((await post('/many', { p: 'p2', t: 't1' })).statusCode, 403)
  t.equal((await post('/many', null)).statusCode, 400, 'an extractor that throws is a missing id')
})

test('app.authz.cached wraps any async function', async (t) => {
  const { app } = await buildApp(t)
  let calls = 0
  const lookupPlan = app.authz.cached(async (userId: string) => { calls++; return { plan: 'pro', userId } }, { kind: 'plan', ttlSeconds: 30 })
  t.same(await lookupPlan(U1), { plan: 'pro', userId: U1 })
  t.same(await lookupPlan(U1), { plan: 'pro', userId: U1 })
  t.equal(calls, 1)
  t.equal(app.authz.invalidateByTags([`plan:${JSON.stringify([U1])}`]), 1, 'tagged {kind}:{key}')
  await lookupPlan(U1)
  t.equal(calls, 2)
})

test('authenticate: a function, or false with request.user set by an earlier hook', async (t) => {
  for (const mode of ['function', 'false'] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    let authCalls = 0
    app.decorateRequest('user', null as never)
    if (mode === 'false') {
      app.addHook('onRequest', async (request) => {
        const header = request.headers['x-user']
        if (typeof header === 'string') (request as { user?: unknown }).user = { id: header }
      })
    }
    await app.register(authzCache, {
      admin: false,
      getUserId: (request) => (request as { user?: { id?: string } }).user?.id,
      authenticate: mode === 'false'
        ? false
        : async (request: { headers: Record<string, unknown>, user?: unknown }) => {
          authCalls++
          if (request.headers['x-user'] === undefined) throw new Error('who are you')
          request.user = { id: request.headers['x-user'] }
        },
      resolvers: { generation: async ({ userId }) => ({ granted: userId === 'alice' }) }
    })
    app.get('/g/:id', { config: { authz: { generation: 'id', access: 'read' } } }, async () => 'ok')
    await app.ready()
    t.equal((await app.inject({ url: '/g/1', headers: { 'x-user': 'alice' } })).statusCode, 200, mode)
    t.equal((await app.inject({ url: '/g/1', headers: { 'x-user': 'bob' } })).statusCode, 403, mode)
    const anon = await app.inject({ url: '/g/1' })
    t.equal(anon.statusCode, 401, mode)
    t.equal(anon.json().code, 'FST_AUTHZ_UNAUTHENTICATED')
    if (mode === 'function') t.equal(authCalls, 3)
  }
})

test('logs: one info line per invalidation, resolver failures at error, never a token', async (t) => {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({ write (chunk, _enc, cb) { lines.push(JSON.parse(chunk.toString())); cb() } })
  const app = Fastify({ logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(authzCache, { resolvers: { generation: async () => { throw new Error('db unreachable') } } })
  app.get('/g/:id', { config: { authz: { generation: 'id', access: 'read' } } }, async () => 'ok')
  await app.ready()
  const token = app.jwt.sign({ sub: U1 })
  t.equal((await app.inject({ url: '/g/g1', headers: { authorization: `Bearer ${token}` } })).statusCode, 503)
  app.authz.setGenerationAccess('g2', U1, { granted: true })
  app.authz.invalidateUserData(U1)
  const failure = lines.find((l) => l.msg === 'authz resolver failed; the check is denied with 503 and nothing is cached')
  t.ok(failure)
  t.equal(failure?.level, 50)
  t.equal(failure?.kind, 'generation')
  t.equal(failure?.id, 'g1')
  t.equal(failure?.userId, U1)
  const invalidation = lines.find((l) => l.msg === 'authz cache invalidated')
  t.same(invalidation?.authzInvalidation, { userId: U1 })
  t.equal(invalidation?.removed, 1)
  t.equal(invalidation?.level, 30)
  const all = lines.map((l) => JSON.stringify(l)).join('\n')
  t.notMatch(all, token, 'no log line carries the token')
  t.notMatch(all, /"authorization"|bearer/i, 'nor the Authorization header')
})
