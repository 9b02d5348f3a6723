/**
 * Compression of stored values (`compressionEnabled`, above
 * `compressionThresholdBytes`): deflate-raw of the value's JSON.
 *
 * `deflateRawSync` answers a slice of a larger chunk (and small Buffers come
 * from Node's shared pool): keeping that slice would pin the whole chunk,
 * about 16 KiB per 2 KB decision. Each packed value is therefore copied into
 * a Buffer of exactly its size, allocated outside the pool.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib'

/** Deep-freezes plain data in place and returns it. */
export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/** The deflated JSON, in a Buffer of its own exact size. */
export function pack (json: string): Buffer {
  const deflated = deflateRawSync(json)
  const own = Buffer.allocUnsafeSlow(deflated.length)
  deflated.copy(own)
  return own
}

/** A fresh, deep-frozen value from a packed one: callers must not believe they can change a decision. */
export function unpack (packed: Buffer): unknown {
  return deepFreeze(JSON.parse(inflateRawSync(packed).toString('utf8')))
}
