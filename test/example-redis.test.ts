/**
 * The example service with Redis: a membership change that Redis does not
 * take in time is still a committed change. The route answers 200 with
 * `propagation: 'queued'` (never a 503 whose retry would find nothing to
 * change), and the revocation reaches Redis once it is back.
 */
import { test } from 'tap'
import { buildExampleApp } from '../examples/app.js'
import { REDIS_URL, eventually, redisAvailable } from './redis-helpers.js'
import { startProxy } from './tcp-proxy.js'

const available = await redisAvailable()
if (available === false) {
  test('the example with Redis', { skip: `no Redis at ${REDIS_URL}` }, () => {})
} else {
  test('a membership change Redis did not take answers 200 (queued), and the revocation is delivered later', async (t) => {
    const proxy = await startProxy()
    t.teardown(() => proxy.close())
    const example = await buildExampleApp({ redisUrl: proxy.url })
    t.teardown(async () => {
      await example.app.close()
      await example.db.close()
    })
    const { app, tokens, ids } = example
    const bob = ids.users.bob
    const g1 = ids.generations.trailerShot1
    const edit = async (): Promise<number> => (await app.inject({ method: 'PUT', url: `/generations/${g1}`, headers: { authorization: `Bearer ${tokens.bob}` }, payload: { prompt: 'rain' } })).statusCode
    t.equal(await edit(), 200)
    t.equal(app.authz.getGenerationAccess(g1, bob).hit, true)

    // The L2 flush the PostgreSQL feed publishes when it starts listening may still be on its way: let Redis take it first.
    t.ok(await eventually(() => app.authz.getStats().redis?.pending === 0, 10_000), 'nothing queued before the freeze')
    // Redis stops answering the command connection (frozen), the subscriber stays open.
    proxy.freeze()
    const demoted = await app.inject({ method: 'PUT', url: `/teams/${ids.teams.studio}/members/${bob}`, headers: { authorization: `Bearer ${tokens.alice}` }, payload: { role: 'viewer' } })
    t.equal(demoted.statusCode, 200, 'the change was committed: no 503')
    t.same(demoted.json(), { ok: true, role: 'viewer', propagation: 'queued' })
    t.equal(await edit(), 403, 'the revocation holds here at once')
    // Twice: the route's own call (a belt) and the trigger's notification, which every instance also publishes for L2.
    t.equal(app.authz.getStats().redis?.pending, 2, 'and waits in the outbox')

    proxy.thaw()
    t.ok(await eventually(() => app.authz.getStats().redis?.pending === 0, 10_000), 'Redis took it once it was back')
    t.equal(await edit(), 403)
  })
}
