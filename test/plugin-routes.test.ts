import { test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.js'
import { G1, G2, U1, U2, fakeClock } from './helpers.js'

function routes (app: FastifyInstance): void {
  app.get('/generations/:generationId/media', { config: { authz: { generation: 'generationId', access: 'read' } } },
    async (request) => ({ ok: true, user: request.authz.userId }))
  app.put('/teams/:teamId/settings', { config: { authz: { team: 'teamId', role: 'admin' } } }, async () => ({ ok: true }))
  app.put('/teams/:teamId/projects/:projectId', {
    config: { authz: [{ team: 'teamId', role: 'member' }, { project: 'projectId', access: 'write' }] }
  }, async () => ({ ok: true }))
  app.get('/documents/:documentId', { config: { authz: { document: 'documentId', access: 'read' } } }, async () => ({ ok: true }))
  app.get('/public', { config: { authz: false } }, async () => ({ ok: true }))
  app.get('/fresh/:generationId', { config: { authz: { generation: 'generationId', access: 'read', fresh: true } } }, async () => ({ ok: true }))
  app.post('/echo/:generationId', { config: { authz: { generation: 'generationId', access: 'write' } } }, async (request) => request.body)
}

test('granted: 200, and the second request does not call the resolver', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'] })
  const first = await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  t.equal(first.statusCode, 200)
  t.same(first.json(), { ok: true, user: U1 })
  const second = await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  t.equal(second.statusCode, 200)
  t.equal(db.calls.length, 1)
  t.same(app.authz.getStats().byKind.generation, { hits: 1, misses: 1, hitRatePercent: 50 })
})

test('denied: 403, cached for negativeTtlSeconds only', async (t) => {
  const clock = fakeClock()
  const { app, db, auth } = await buildApp(t, { now: clock.now, random: () => 0, negativeTtlSeconds: 30 }, routes)
  const res = await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  t.equal(res.statusCode, 403)
  t.same(Object.keys(res.json()).sort(), ['code', 'error', 'message', 'statusCode'])
  t.equal(res.json().code, 'FST_AUTHZ_FORBIDDEN')
  t.equal(res.json().error, 'Forbidden')
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['read'] })
  clock.tick(29_000)
  t.equal((await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })).statusCode, 403, 'the deny is cached...')
  t.equal(db.calls.length, 1)
  clock.tick(1000)
  t.equal((await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })).statusCode, 200, '...for 30 s only')
  t.equal(db.calls.length, 2)
})

test('access levels: a grant without the asked access is a 403', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`generation:${G1}:${U1}`, { granted: true, access: ['write'] })
  db.table.set(`generation:${G2}:${U1}`, { granted: true })
  t.equal((await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })).statusCode, 403)
  t.equal((await app.inject({ url: `/generations/${G2}/media`, headers: auth(U1) })).statusCode, 200, 'absent access means every access')
})

test('no, malformed or invalid token: 401 and the resolver is not called', async (t) => {
  const { app, db, token } = await buildApp(t, {}, routes)
  const cases = [
    {},
    { authorization: 'Bearer' },
    { authorization: 'Bearer not.a.jwt' },
    { authorization: `Bearer ${token(U1)}x` },
    { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }
  ]
  for (const headers of cases) {
    const res = await app.inject({ url: `/generations/${G1}/media`, headers })
    t.equal(res.statusCode, 401, JSON.stringify(headers))
    t.equal(res.json().code, 'FST_AUTHZ_UNAUTHENTICATED')
    t.notMatch(res.body, token(U1), 'the token is never echoed')
  }
  const noSub = await app.inject({ url: `/generations/${G1}/media`, headers: { authorization: `Bearer ${app.jwt.sign({ name: 'x' })}` } })
  t.equal(noSub.statusCode, 401, 'a token without sub')
  t.equal(db.calls.length, 0)
})

test('bad id: 400 FST_AUTHZ_BAD_ID', async (t) => {
  const { app, db, auth } = await buildApp(t, { maxIdLength: 40 }, routes)
  const res = await app.inject({ url: `/generations/${'x'.repeat(41)}/media`, headers: auth(U1) })
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'FST_AUTHZ_BAD_ID')
  t.equal(db.calls.length, 0)
})

test('resolver throws or times out: 503, and the next request calls the resolver again', async (t) => {
  let mode: 'throw' | 'hang' | 'ok' = 'throw'
  let calls = 0
  const { app, auth } = await buildApp(t, {
    loaderTimeoutMs: 30,
    resolvers: {
      generation: async () => {
        calls++
        if (mode === 'throw') throw new Error('connection refused')
        if (mode === 'hang') return new Promise(() => {})
        return { granted: true }
      }
    }
  }, (app) => app.get('/generations/:generationId/media', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => ({ ok: true })))
  const failed = await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  t.equal(failed.statusCode, 503)
  t.equal(failed.json().code, 'FST_AUTHZ_RESOLVER_FAILED')
  t.notMatch(failed.body, 'connection refused', 'internal causes stay in the logs')
  mode = 'hang'
  const timedOut = await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  t.equal(timedOut.statusCode, 503)
  t.equal(timedOut.json().code, 'FST_AUTHZ_RESOLVER_TIMEOUT')
  mode = 'ok'
  t.equal((await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })).statusCode, 200)
  t.equal(calls, 3)
})

test('200 concurrent requests on a cold key make one resolver call', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  const gate = db.hold()
  const headers = auth(U1)
  const pending = Array.from({ length: 200 }, () => app.inject({ url: `/generations/${G1}/media`, headers }))
  await new Promise((resolve) => setTimeout(resolve, 50))
  gate.resolve()
  const results = await Promise.all(pending)
  t.ok(results.every((r) => r.statusCode === 200))
  t.equal(db.calls.length, 1)
  t.equal(app.authz.getStats().coalesced, 199)
})

test('an invalidation during an in-flight load: the request that starts after it sees the new answer', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  const gate = db.hold()
  const early = app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(db.calls.length, 1, 'the first load is in flight')
  db.table.set(`generation:${G1}:${U1}`, { granted: false })
  db.gate = undefined
  await app.authz.invalidateUserAuthorizationCache(U1)
  const late = await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })
  t.equal(late.statusCode, 403, 'the revocation holds for the later request')
  gate.resolve()
  t.equal((await early).statusCode, 200)
  t.equal((await app.inject({ url: `/generations/${G1}/media`, headers: auth(U1) })).statusCode, 403, 'and the stale grant was not stored')
})

test('role ranking: owner passes role admin, member does not', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`team:t1:${U1}`, { granted: true, role: 'owner' })
  db.table.set(`team:t1:${U2}`, { granted: true, role: 'member' })
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/settings', headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/settings', headers: auth(U2) })).statusCode, 403)
  db.table.set(`team:t2:${U1}`, { granted: true })
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t2/settings', headers: auth(U1) })).statusCode, 403, 'no role: no rank')
})

test('custom roles rank as given', async (t) => {
  const { app, db, auth } = await buildApp(t, { roles: ['guest', 'editor', 'admin'] }, (a) => {
    a.put('/teams/:teamId/settings', { config: { authz: { team: 'teamId', role: 'admin' } } }, async () => ({ ok: true }))
  })
  db.table.set(`team:t1:${U1}`, { granted: true, role: 'admin' })
  db.table.set(`team:t1:${U2}`, { granted: true, role: 'owner' })
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/settings', headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/settings', headers: auth(U2) })).statusCode, 403, 'an unknown role ranks nowhere')
})

test('all checks of a route must pass', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`team:t1:${U1}`, { granted: true, role: 'member' })
  db.table.set(`project:p1:${U1}`, { granted: true, access: ['read'] })
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/projects/p1', headers: auth(U1) })).statusCode, 403)
  db.table.set(`project:p2:${U1}`, { granted: true, access: ['read', 'write'] })
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/projects/p2', headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ method: 'PUT', url: '/teams/t1/projects/p2', headers: auth(U1) })).statusCode, 200, 'second time from the cache')
  t.equal(db.calls.length, 3)
})

test('custom kinds work like built-in ones', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`document:d1:${U1}`, { granted: true, access: ['read'] })
  t.equal((await app.inject({ url: '/documents/d1', headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ url: '/documents/d2', headers: auth(U1) })).statusCode, 403)
  t.ok(app.authz.keys().includes(`auth:document:d1:user:${U1}:access`))
})

test('config.authz: false and routes without checks are left alone', async (t) => {
  const { app, db } = await buildApp(t, {}, routes)
  t.equal((await app.inject({ url: '/public' })).statusCode, 200)
  t.equal(db.calls.length, 0)
})

test('fresh: true reloads on every request and refreshes the cache', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  t.equal((await app.inject({ url: `/fresh/${G1}`, headers: auth(U1) })).statusCode, 200)
  db.table.set(`generation:${G1}:${U1}`, { granted: false })
  t.equal((await app.inject({ url: `/fresh/${G1}`, headers: auth(U1) })).statusCode, 403)
  t.equal(db.calls.length, 2)
  t.same(app.authz.getGenerationAccess(G1, U1).value, { granted: false })
})

test('a denied request never has its body parsed', async (t) => {
  const { app, auth } = await buildApp(t, {}, (a) => {
    routes(a)
    a.addContentTypeParser('application/x-count', { parseAs: 'string' }, (_req, body, done) => {
      parsed++
      done(null, body)
    })
  })
  let parsed = 0
  const res = await app.inject({ method: 'POST', url: `/echo/${G1}`, headers: { ...auth(U1), 'content-type': 'application/x-count' }, payload: 'x' })
  t.equal(res.statusCode, 403)
  t.equal(parsed, 0)
})

test('maxEntries holds after 3x as many distinct checks', async (t) => {
  const { app, db, auth } = await buildApp(t, { maxEntries: 50 }, routes)
  const headers = auth(U1)
  for (let i = 0; i < 150; i++) {
    db.table.set(`generation:g${i}:${U1}`, { granted: true })
    t.equal((await app.inject({ url: `/generations/g${i}/media`, headers })).statusCode, 200)
    if (app.authz.getStats().totalEntries > 50) t.fail(`over the cap after ${i}`)
  }
  const stats = app.authz.getStats()
  t.equal(stats.totalEntries, 50)
  t.equal(stats.evictions, 100)
})

test('HEAD routes are checked once', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, routes)
  db.table.set(`generation:${G1}:${U1}`, { granted: true })
  t.equal((await app.inject({ method: 'HEAD', url: `/generations/${G1}/media`, headers: auth(U1) })).statusCode, 200)
  t.equal((await app.inject({ method: 'HEAD', url: `/generations/${G1}/media` })).statusCode, 401, 'HEAD is guarded too')
  t.equal(app.authz.getStats().misses, 1)
})

test('a 100,000-character sub is refused with 400 FST_AUTHZ_BAD_ID (it passed route checks and became a 100,024-character key)', async (t) => {
  const { app, db, auth } = await buildApp(t, {}, (a) => {
    routes(a)
    a.get('/lazy/:generationId', async (request) => request.authz.generationAccess((request.params as { generationId: string }).generationId))
    a.post('/required', { preHandler: a.authz.require({ generation: (request) => (request.body as { id: string }).id, access: 'read' }) }, async () => ({ ok: true }))
  })
  const huge = 'u'.repeat(100_000)
  db.table.set(`generation:${G1}:${huge}`, { granted: true })
  const cases = [
    { url: `/generations/${G1}/media` },
    { url: `/lazy/${G1}` },
    { method: 'POST' as const, url: '/required', payload: { id: G1 } }
  ]
  for (const c of cases) {
    const res = await app.inject({ ...c, headers: auth(huge) })
    t.equal(res.statusCode, 400, c.url)
    t.equal(res.json().code, 'FST_AUTHZ_BAD_ID', c.url)
    t.match(res.json().message, 'userId', c.url)
  }
  const limit = await app.inject({ url: `/generations/${G1}/media`, headers: auth('u'.repeat(256)) })
  t.equal(limit.statusCode, 403, 'a user id of exactly maxIdLength is checked as usual')
  t.equal(db.calls.length, 1, 'the resolver never saw the oversized id')
  t.notOk(app.authz.keys().some((key) => key.length > 1000), 'no oversized key was stored')
})

test('a too-long user id set by an earlier hook (authenticate: false) is refused too', async (t) => {
  const { app, db } = await buildApp(t, { authenticate: false, admin: false }, (a) => {
    a.addHook('onRequest', async (request) => { (request as { user?: unknown }).user = { sub: String(request.headers['x-user']) } })
    routes(a)
    a.get('/lazy/:generationId', async (request) => request.authz.generationAccess((request.params as { generationId: string }).generationId))
  })
  for (const url of [`/generations/${G1}/media`, `/lazy/${G1}`]) {
    const res = await app.inject({ url, headers: { 'x-user': 'v'.repeat(257) } })
    t.equal(res.statusCode, 400, url)
    t.equal(res.json().code, 'FST_AUTHZ_BAD_ID', url)
  }
  t.equal(db.calls.length, 0)
})
