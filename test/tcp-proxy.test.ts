import { test, type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { Redis, type RedisOptions } from 'ioredis'
import { REDIS_URL, eventually, redisAvailable } from './redis-helpers.js'
import { startProxy, type ConnectionInfo, type TcpProxy } from './tcp-proxy.js'

const TIMEOUT = Symbol('timeout')

/** `p`, or TIMEOUT if it does not settle within `ms`. */
async function within<V> (p: Promise<V>, ms: number): Promise<V | typeof TIMEOUT> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<typeof TIMEOUT>((resolve) => { timer = setTimeout(() => resolve(TIMEOUT), ms) })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

const isSubscriber = (c: ConnectionInfo): boolean => /subscribe/i.test(c.clientBytes)

/** A proxy to the test Redis and a factory of ioredis clients through it; one teardown closes the clients, then the proxy. */
async function setup (t: Test): Promise<{ proxy: TcpProxy, client: (opts?: RedisOptions) => Redis, track: (r: Redis) => Redis }> {
  const target = new URL(REDIS_URL)
  const proxy = await startProxy({ host: target.hostname, port: Number(target.port || 6379) })
  const clients: Redis[] = []
  const track = (r: Redis): Redis => {
    r.on('error', () => {})
    clients.push(r)
    return r
  }
  t.teardown(async () => {
    for (const r of clients) r.disconnect()
    await proxy.close()
  })
  return { proxy, client: (opts = {}) => track(new Redis(proxy.url, opts)), track }
}

const available = await redisAvailable()
if (available === false) {
  test('tcp proxy', { skip: `no Redis at ${REDIS_URL}` }, () => {})
} else {
  test('a GET works through the proxy', async (t) => {
    const { proxy, client } = await setup(t)
    t.equal(proxy.url, `redis://127.0.0.1:${proxy.port}`)
    const direct = new Redis(REDIS_URL)
    const key = `tcp-proxy-test:${randomUUID()}`
    t.teardown(async () => {
      await direct.del(key)
      await direct.quit()
    })
    await direct.set(key, 'through')
    const redis = client()
    t.equal(await redis.get(key), 'through')
    const infos = proxy.connections()
    t.equal(infos.length, 1)
    t.equal(infos[0].index, 0)
    t.ok(infos[0].bytesFromClient > 0)
    t.ok(infos[0].bytesFromServer > 0)
    t.ok(infos[0].firstClientBytes.length > 0 && infos[0].firstClientBytes.length <= 256)
    t.ok(infos[0].clientBytes.includes(key), 'clientBytes holds the GET')
  })

  test('freeze holds bytes in both directions, keeps sockets open, and thaw delivers them', async (t) => {
    const { proxy, client } = await setup(t)
    const redis = client()
    t.equal(await redis.ping(), 'PONG')
    let closed = false
    redis.on('close', () => { closed = true })

    proxy.freeze()
    const pending = redis.ping()
    t.equal(await within(pending, 300), TIMEOUT, 'no reply while frozen')

    // A connection made during the freeze is accepted but frozen too.
    const late = client({ lazyConnect: true })
    const lateConnect = late.connect()
    t.equal(await within(lateConnect, 300), TIMEOUT, 'a new connection gets no reply while frozen')
    t.equal(proxy.connections().length, 2, 'the new connection was accepted')
    t.equal(closed, false, 'the client saw no close')

    proxy.thaw()
    t.equal(await pending, 'PONG', 'the reply arrives after thaw')
    await lateConnect
    t.equal(await late.ping(), 'PONG')
    t.equal(closed, false)
  })

  test('cut() closes every connection; new connections still work', async (t) => {
    const { proxy, client } = await setup(t)
    const a = client()
    const b = client()
    await Promise.all([a.ping(), b.ping()])
    const closes = [a, b].map((r) => new Promise<void>((resolve) => r.once('close', () => resolve())))
    proxy.cut()
    await Promise.all(closes)
    t.pass('both clients emitted close')
    // ioredis reconnects through the proxy.
    t.equal(await a.ping(), 'PONG')
    t.ok(await eventually(() => proxy.connections().length >= 1))
  })

  test('cutWhere picks only the subscriber connection', async (t) => {
    const { proxy, client, track } = await setup(t)
    const cmd = client()
    const sub = track(cmd.duplicate())
    await cmd.ping()
    await sub.subscribe(`tcp-proxy-test:${randomUUID()}`)
    t.equal(proxy.connections().filter(isSubscriber).length, 1)

    let cmdClosed = false
    cmd.on('close', () => { cmdClosed = true })
    const subClosed = new Promise<void>((resolve) => sub.once('close', () => resolve()))
    t.equal(proxy.cutWhere(isSubscriber), 1)
    await subClosed
    t.equal(await cmd.ping(), 'PONG')
    t.equal(cmdClosed, false, 'the command connection is untouched')
  })

  test('cutWhere picks only the command connection', async (t) => {
    const { proxy, client, track } = await setup(t)
    const cmd = client()
    const sub = track(cmd.duplicate())
    const channel = `tcp-proxy-test:${randomUUID()}`
    await cmd.ping()
    await sub.subscribe(channel)

    let subClosed = false
    sub.on('close', () => { subClosed = true })
    const cmdClosed = new Promise<void>((resolve) => cmd.once('close', () => resolve()))
    t.equal(proxy.cutWhere((c) => !isSubscriber(c)), 1)
    await cmdClosed
    t.equal(subClosed, false, 'the subscriber is untouched')

    // The subscriber still receives, and the command client is back after its reconnect.
    const got = new Promise<string>((resolve) => sub.once('message', (_ch: string, msg: string) => resolve(msg)))
    t.equal(await cmd.publish(channel, 'hello'), 1)
    t.equal(await got, 'hello')
    t.equal(subClosed, false)
  })

  test('refuse(true) makes connects fail; refuse(false) lets them through again', async (t) => {
    const { proxy, client } = await setup(t)
    const before = client()
    t.equal(await before.ping(), 'PONG')

    proxy.refuse(true)
    const refused = client({ lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, enableOfflineQueue: false, connectTimeout: 1000 })
    await t.rejects(refused.connect())
    t.equal(await before.ping(), 'PONG', 'existing connections keep working')
    t.equal(proxy.connections().length, 1, 'refused connections are not listed')

    proxy.refuse(false)
    const after = client()
    t.equal(await after.ping(), 'PONG')
    t.same(proxy.connections().map((c) => c.index), [0, 1], 'refused connections take no index')
  })
}
