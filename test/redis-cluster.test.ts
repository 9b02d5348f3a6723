/**
 * Redis Cluster: a local 3-node cluster started by the test (redis-server
 * with `--cluster-enabled yes` on free ports, joined by `redis-cli --cluster
 * create`). Every key of the plugin lands in one slot through the hash tag
 * in `keyPrefix`, so its Lua scripts run on one node; L2, the fence and the
 * bus work through an ioredis Cluster client.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { test, type Test } from 'tap'
import { Cluster } from 'ioredis'
import { AuthzCache } from '../lib/cache.js'
import { connectRedis } from '../lib/redis.js'
import type { Decision } from '../lib/types.js'
import { eventually, resolvedRedis, silentLogger } from './redis-helpers.js'

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

const hasBinaries = spawnSync('redis-server', ['--version']).status === 0 && spawnSync('redis-cli', ['--version']).status === 0

async function startCluster (t: Test): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), 'authz-cluster-'))
  const ports = [await freePort(), await freePort(), await freePort()]
  const nodes: ChildProcess[] = ports.map((port) => spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
    '--cluster-config-file', `nodes-${port}.conf`, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' }))
  t.teardown(() => {
    for (const node of nodes) node.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  for (const port of ports) {
    if (!await eventually(() => spawnSync('redis-cli', ['-p', String(port), 'ping']).stdout?.toString().trim() === 'PONG', 5000)) throw new Error(`redis-server on ${port} did not start`)
  }
  const created = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' })
  if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stdout} ${created.stderr}`)
  const ok = await eventually(() => ports.every((p) => /cluster_state:ok/.test(spawnSync('redis-cli', ['-p', String(p), 'cluster', 'info'], { encoding: 'utf8' }).stdout)), 10_000)
  if (!ok) throw new Error('the cluster did not reach cluster_state:ok')
  return ports
}

if (!hasBinaries) {
  test('Redis Cluster', { skip: 'redis-server / redis-cli not installed' }, () => {})
} else {
  test('on a 3-node Redis Cluster: L2, the fence and the bus work, every key in one slot', async (t) => {
    const ports = await startCluster(t)
    const keyPrefix = `{authz-test-${randomUUID()}}:`
    const channel = `authz-test:${randomUUID()}`
    const rows = new Map<string, Decision>()
    const calls: number[] = []
    const instance = async (i: number): Promise<AuthzCache> => {
      calls[i] = 0
      const client = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })))
      const engine = new AuthzCache({
        cleanupIntervalSeconds: 0,
        resolvers: { generation: async ({ id, userId }) => { calls[i]++; return rows.get(`${id}:${userId}`) ?? null } }
      })
      const layer = await connectRedis(engine, resolvedRedis({ keyPrefix, channel }, { client, url: undefined, commandTimeoutMs: 2000, heartbeatMs: 200, ackTimeoutMs: 2000 }), silentLogger)
      t.teardown(async () => {
        engine.close()
        await layer.close()
        client.disconnect()
      })
      t.ok(await eventually(() => engine.getStats().redis?.connected === true, 10_000), `instance ${i}: bus up through the cluster`)
      return engine
    }
    const a = await instance(0)
    const b = await instance(1)
    rows.set('g1:u1', { granted: true, tags: ['project:p1'] })
    t.equal((await a.getOrLoad('generation', 'u1', 'g1')).granted, true)
    t.equal((await b.getOrLoad('generation', 'u1', 'g1')).granted, true)
    t.same(calls, [1, 0], 'B read the decision from L2 on the cluster')

    rows.set('g1:u1', { granted: false })
    const answer = await a.invalidateEverywhere({ projectId: 'p1' })
    t.same({ acknowledged: answer.acknowledged, instances: answer.instances }, { acknowledged: 2, instances: 2 }, 'both instances acknowledged')
    t.equal((await b.getOrLoad('generation', 'u1', 'g1')).granted, false, 'the decision tag revocation holds on B')
    const c = await instance(2)
    t.equal((await c.getOrLoad('generation', 'u1', 'g1')).granted, false, 'and L2 holds no stale grant')

    const slots = new Set(['seq', 'g', 'boot', 'v:auth:gen:g1:user:u1:access', 'e:project:p1'].map((k) =>
      spawnSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'keyslot', keyPrefix + k], { encoding: 'utf8' }).stdout.trim()))
    t.equal(slots.size, 1, 'every key of the plugin is in one slot')
  })
}
