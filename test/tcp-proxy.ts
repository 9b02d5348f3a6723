import { createServer, connect, type Server, type Socket } from 'node:net'

/** What a test can see of one proxied connection (a snapshot). */
export interface ConnectionInfo {
  /** 0-based order in which the proxy accepted (and forwarded) the connection; refused connections do not count. */
  index: number
  /** Bytes received from the client so far (forwarded or still held by a freeze). */
  bytesFromClient: number
  /** Bytes received from the server so far (forwarded or still held by a freeze). */
  bytesFromServer: number
  /** The first up-to-256 bytes the client sent, latin1. */
  firstClientBytes: string
  /**
   * The first up-to-4 KiB the client sent, latin1. ioredis may send `INFO` / `CLIENT SETNAME` before anything
   * else, and writes command names as given (`subscribe`, lowercase): match with a case-insensitive regex.
   */
  clientBytes: string
}

export interface TcpProxy {
  /** The local port clients connect to (127.0.0.1). */
  readonly port: number
  /** `redis://127.0.0.1:${port}` */
  readonly url: string
  /**
   * Stop forwarding bytes in both directions but keep every socket open (a frozen server: SIGSTOP-like).
   * New connections are accepted and also frozen. Bytes are buffered and delivered on thaw().
   */
  freeze (): void
  thaw (): void
  /** Destroy every current connection (both sides). New connections still work unless refuse(true). */
  cut (): void
  /** Destroy only the connections for which `pick(info)` is true; returns how many were cut. */
  cutWhere (pick: (info: ConnectionInfo) => boolean): number
  /** While true, new connections are accepted and destroyed immediately (a server that is down). */
  refuse (on: boolean): void
  /** Live connection infos (snapshots). */
  connections (): ConnectionInfo[]
  close (): Promise<void>
}

const FIRST_BYTES = 256
const ALL_BYTES = 4096

interface Connection {
  index: number
  client: Socket
  upstream: Socket
  bytesFromClient: number
  bytesFromServer: number
  clientBytes: string
  /** Chunks held by a freeze, in order of arrival, with the socket they go to. */
  held: Array<{ to: Socket, chunk: Buffer }>
  closed: boolean
}

function snapshot (c: Connection): ConnectionInfo {
  return {
    index: c.index,
    bytesFromClient: c.bytesFromClient,
    bytesFromServer: c.bytesFromServer,
    firstClientBytes: c.clientBytes.slice(0, FIRST_BYTES),
    clientBytes: c.clientBytes
  }
}

/**
 * A TCP proxy on 127.0.0.1 (a port from `listen(0)`) to `target` (Redis at 127.0.0.1:6379 by default), for
 * fault-injection tests: freeze/thaw the traffic, cut some or all connections, refuse new ones.
 */
export async function startProxy (target: { host: string, port: number } = { host: '127.0.0.1', port: 6379 }): Promise<TcpProxy> {
  const live = new Set<Connection>()
  let frozen = false
  let refusing = false
  let accepted = 0

  const destroy = (c: Connection): void => {
    if (c.closed) return
    c.closed = true
    c.held.length = 0
    live.delete(c)
    c.client.destroy()
    c.upstream.destroy()
  }

  const forward = (c: Connection, to: Socket, chunk: Buffer): void => {
    if (frozen) c.held.push({ to, chunk })
    else if (!to.destroyed) to.write(chunk)
  }

  const server: Server = createServer((client) => {
    client.on('error', () => {})
    if (refusing) {
      client.destroy()
      return
    }
    client.setNoDelay(true)
    const upstream = connect({ host: target.host, port: target.port })
    upstream.setNoDelay(true)
    upstream.on('error', () => {})
    const c: Connection = { index: accepted++, client, upstream, bytesFromClient: 0, bytesFromServer: 0, clientBytes: '', held: [], closed: false }
    live.add(c)

    client.on('data', (chunk: Buffer) => {
      c.bytesFromClient += chunk.length
      if (c.clientBytes.length < ALL_BYTES) c.clientBytes += chunk.subarray(0, ALL_BYTES - c.clientBytes.length).toString('latin1')
      forward(c, upstream, chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      c.bytesFromServer += chunk.length
      forward(c, client, chunk)
    })
    // Either side going away takes the other one with it (Redis connections are not half-closed).
    client.on('close', () => destroy(c))
    upstream.on('close', () => destroy(c))
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as { port: number }).port

  const cutWhere = (pick: (info: ConnectionInfo) => boolean): number => {
    let n = 0
    for (const c of [...live]) {
      if (pick(snapshot(c))) {
        destroy(c)
        n++
      }
    }
    return n
  }

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    freeze () {
      frozen = true
    },
    thaw () {
      frozen = false
      for (const c of live) {
        const held = c.held.splice(0)
        for (const { to, chunk } of held) if (!to.destroyed) to.write(chunk)
      }
    },
    cut () {
      cutWhere(() => true)
    },
    cutWhere,
    refuse (on: boolean) {
      refusing = on
    },
    connections () {
      return [...live].map(snapshot)
    },
    async close () {
      refusing = true
      frozen = false
      for (const c of [...live]) destroy(c)
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
