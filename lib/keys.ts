/**
 * Cache keys and tags, in the seed's hierarchy:
 *
 *   auth:gen:{generationId}:user:{userId}:access
 *   auth:project:{projectId}:user:{userId}:access
 *   auth:team:{teamId}:user:{userId}:role
 *   auth:user:{userId}:profile
 *   auth:{kind}:{id}:user:{userId}:access          (custom kinds)
 *   uuid:validation:{uuidHash}:context:{context}
 *   cached:{name}:{argumentsKey}                    (app.authz.cached)
 *
 * Every id segment is escaped (`%` -> `%25`, `:` -> `%3A`, `*` -> `%2A`), so
 * a segment never holds a separator or a wildcard: two different
 * (kind, id, user) triples never share a key, and `auth:user:12345:*` never
 * touches user `123456`. Kind names are restricted to `[a-zA-Z0-9_-]`.
 */
import { createHash } from 'node:crypto'
import { FST_AUTHZ_OPTIONS } from './errors.js'

const NEEDS_ESCAPE = /[%:*]/
const ESCAPE_ALL = /[%:*]/g
const ESCAPES: Record<string, string> = { '%': '%25', ':': '%3A', '*': '%2A' }

/** Escapes one key segment. Ids without `%`, `:` or `*` (UUIDs, numbers) come back unchanged. */
export function escapeKeySegment (segment: string): string {
  return NEEDS_ESCAPE.test(segment) ? segment.replace(ESCAPE_ALL, (c) => ESCAPES[c]) : segment
}

export type KeyBuilder = (id: string, userId: string) => string

/** The key builder of a kind: a closure per kind so the hot path does not branch on the kind. */
export function keyBuilderFor (kind: string): KeyBuilder {
  switch (kind) {
    case 'generation':
      return (id, userId) => `auth:gen:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:access`
    case 'project':
      return (id, userId) => `auth:project:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:access`
    case 'team':
      return (id, userId) => `auth:team:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:role`
    case 'profile':
      return (_id, userId) => `auth:user:${escapeKeySegment(userId)}:profile`
    default:
      return (id, userId) => `auth:${kind}:${escapeKeySegment(id)}:user:${escapeKeySegment(userId)}:access`
  }
}

/** Undoes `escapeKeySegment`; undefined for a segment no escape could have made (a separator, a wildcard, a stray `%`). */
export function unescapeKeySegment (segment: string): string | undefined {
  if (segment.includes(':') || segment.includes('*')) return undefined
  if (!segment.includes('%')) return segment
  let out = ''
  let from = 0
  for (let at = segment.indexOf('%'); at !== -1; at = segment.indexOf('%', from)) {
    const code = segment.slice(at, at + 3)
    const char = code === '%25' ? '%' : code === '%3A' ? ':' : code === '%2A' ? '*' : undefined
    if (char === undefined) return undefined
    out += segment.slice(from, at) + char
    from = at + 3
  }
  return out + segment.slice(from)
}

/** Where a key points: the name of its kind's state, and the (id, userId) pair its key builder took. */
export interface KeyAddress {
  readonly kind: string
  readonly id: string
  readonly userId: string
}

/**
 * The address of a key of the hierarchy above, read back from the key
 * itself (the store keeps no key -> entry map: it derives keys). Undefined
 * for anything else, and for uuid validations, whose key holds a hash of the
 * uuid rather than the uuid. The caller confirms with the kind's key builder
 * that the address builds the very same key.
 */
export function parseKey (key: string): KeyAddress | undefined {
  if (key.startsWith('cached:')) {
    const colon = key.indexOf(':', 7)
    if (colon === -1) return undefined
    const id = unescapeKeySegment(key.slice(colon + 1))
    return id === undefined ? undefined : { kind: key.slice(0, colon), id, userId: '' }
  }
  if (!key.startsWith('auth:')) return undefined
  const parts = key.split(':', 7)
  if (parts.length === 4 && parts[1] === 'user' && parts[3] === 'profile') {
    const userId = unescapeKeySegment(parts[2])
    return userId === undefined ? undefined : { kind: 'profile', id: userId, userId }
  }
  if (parts.length !== 6 || parts[3] !== 'user') return undefined
  const id = unescapeKeySegment(parts[2])
  const userId = unescapeKeySegment(parts[4])
  if (id === undefined || userId === undefined) return undefined
  return { kind: parts[1] === 'gen' ? 'generation' : parts[1], id, userId }
}

/** The `uuidHash` segment of a uuid-validation key: the uuid is not kept in the key. */
export function uuidHash (uuid: string): string {
  return createHash('sha256').update(uuid).digest('hex').slice(0, 32)
}

export function uuidValidationKey (uuid: string, context: string): string {
  return `uuid:validation:${uuidHash(uuid)}:context:${escapeKeySegment(context)}`
}

export function cachedFunctionKey (name: string, argumentsKey: string): string {
  return `cached:${name}:${escapeKeySegment(argumentsKey)}`
}

/** The tag every entry of `kind` for resource `id` carries. */
export function resourceTag (kind: string, id: string): string {
  return `${kind}:${id}`
}

/** The tag every entry of a user carries. */
export function userTag (userId: string): string {
  return `user:${userId}`
}

/** The tags an invalidation request names: its `tags`, and those of its userId/generationId/projectId/teamId. */
export function invalidationTags (request: { userId?: string, generationId?: string, projectId?: string, teamId?: string, tags?: string[] }): Set<string> {
  const tags = new Set<string>()
  if (request.userId !== undefined) tags.add(userTag(request.userId))
  if (request.generationId !== undefined) tags.add(resourceTag('generation', request.generationId))
  if (request.projectId !== undefined) tags.add(resourceTag('project', request.projectId))
  if (request.teamId !== undefined) tags.add(resourceTag('team', request.teamId))
  for (const tag of request.tags ?? []) tags.add(tag)
  return tags
}

/** Longest invalidation pattern accepted, in characters (the admin route's `maxLength` too). */
export const MAX_PATTERN_LENGTH = 1024
/**
 * Most `*` an invalidation pattern may hold. Matching here is linear
 * whatever the stars; the cap bounds what Redis's own MATCH (a backtracking
 * glob) does with a pattern during the L2 SCAN.
 */
export const MAX_PATTERN_STARS = 16

/** A compiled key pattern (`compilePattern`). */
export interface KeyPattern {
  /** The pattern, runs of `*` collapsed to one. */
  readonly source: string
  /** True when the whole key matches. Costs O(key length + pattern length) comparisons, whatever the pattern. */
  test (key: string): boolean
}

/** Counts the character comparisons a compiled pattern makes, to check the cost bound (tests, diagnostics). */
export interface MatchMeter {
  steps: number
}

/** Collapses runs of `*`: `a**b` matches exactly what `a*b` matches. */
export function collapseStars (pattern: string): string {
  return pattern.includes('**') ? pattern.replace(/\*{2,}/g, '*') : pattern
}

/** Why `pattern` is refused as an invalidation pattern (too long, too many `*`), or undefined when it is fine. */
export function patternProblem (pattern: string): string | undefined {
  if (pattern.length > MAX_PATTERN_LENGTH) return `must be at most ${MAX_PATTERN_LENGTH} characters, got ${pattern.length}`
  let stars = 0
  for (let i = pattern.indexOf('*'); i !== -1; i = pattern.indexOf('*', i + 1)) stars++
  if (stars > MAX_PATTERN_STARS) return `must hold at most ${MAX_PATTERN_STARS} '*', got ${stars}`
  return undefined
}

/** The KMP failure table of a literal segment: the length of its longest proper border ending at each index. */
function borders (segment: string): Int32Array {
  const table = new Int32Array(segment.length)
  let k = 0
  for (let i = 1; i < segment.length; i++) {
    while (k > 0 && segment.charCodeAt(i) !== segment.charCodeAt(k)) k = table[k - 1]
    if (segment.charCodeAt(i) === segment.charCodeAt(k)) k++
    table[i] = k
  }
  return table
}

/**
 * A `*`-only glob as its literal pieces: a prefix, a suffix, and the middle
 * segments between stars. A key matches when it starts with the prefix,
 * ends with the suffix, and holds the middle segments in order, without
 * overlap, in between; taking each middle segment at its leftmost place is
 * then always right (a later place only leaves less room for the rest). Each
 * segment is found with KMP (skipping to its first character while nothing
 * is matched), and each search starts where the previous one ended, so the
 * whole test makes at most 3 x (key length + pattern length + 1)
 * comparisons. No regular expression: a backtracking one blows up on
 * patterns like `********x`.
 */
class GlobPattern implements KeyPattern {
  readonly source: string
  readonly #prefix: string
  readonly #suffix: string
  readonly #middles: string[]
  readonly #borders: Int32Array[]
  readonly #minLength: number
  readonly #meter: MatchMeter | undefined

  constructor (source: string, meter: MatchMeter | undefined) {
    this.source = source
    const parts = source.split('*')
    this.#prefix = parts[0]
    this.#suffix = parts[parts.length - 1]
    // Stars are collapsed, so every middle segment is non-empty.
    this.#middles = parts.slice(1, -1)
    this.#borders = this.#middles.map(borders)
    this.#minLength = source.length - (parts.length - 1)
    this.#meter = meter
  }

  test (key: string): boolean {
    const prefix = this.#prefix
    const suffix = this.#suffix
    // startsWith/endsWith compare at most the length of what they look for.
    let steps = 1 + prefix.length + suffix.length
    let matched = key.length >= this.#minLength && key.startsWith(prefix) && key.endsWith(suffix)
    const middles = this.#middles
    if (matched && middles.length > 0) {
      const end = key.length - suffix.length
      let i = prefix.length
      for (let s = 0; s < middles.length && matched; s++) {
        const segment = middles[s]
        const table = this.#borders[s]
        const last = segment.length
        let j = 0
        while (j < last) {
          if (j === 0) {
            // Nothing matched yet: skip to the next occurrence of the first character (one look per position).
            const at = key.indexOf(segment[0], i)
            steps += (at === -1 ? key.length : at + 1) - i
            if (at === -1 || at > end - last) {
              matched = false
              break
            }
            i = at + 1
            j = 1
            continue
          }
          if (i >= end) {
            matched = false
            break
          }
          const c = key.charCodeAt(i++)
          steps++
          while (j > 0 && c !== segment.charCodeAt(j)) {
            j = table[j - 1]
            steps++
          }
          if (c === segment.charCodeAt(j)) j++
        }
      }
    }
    if (this.#meter !== undefined) this.#meter.steps += steps
    return matched
  }
}

/** A pattern without `*`: the key itself. */
class ExactPattern implements KeyPattern {
  readonly source: string
  readonly #meter: MatchMeter | undefined

  constructor (source: string, meter: MatchMeter | undefined) {
    this.source = source
    this.#meter = meter
  }

  test (key: string): boolean {
    if (this.#meter !== undefined) this.#meter.steps += 1 + Math.min(key.length, this.source.length)
    return key === this.source
  }
}

/**
 * Compiles a key pattern: `*` matches any run of characters (including
 * none), everything else matches itself. Anchored at both ends. `test`
 * costs O(key length + pattern length) whatever the pattern; `meter`, when
 * given, adds up the comparisons each `test` makes.
 */
export function compilePattern (pattern: string, meter?: MatchMeter): KeyPattern {
  const source = collapseStars(pattern)
  return source.includes('*') ? new GlobPattern(source, meter) : new ExactPattern(source, meter)
}

/** The refusal of an argument the default key of `cached()` cannot represent faithfully. */
function refuse (what: string, trail: Array<string | number>): never {
  let path = ''
  for (const step of trail) {
    path += typeof step === 'number' ? `[${step}]` : /^[A-Za-z_$][\w$]*$/.test(step) ? `.${step}` : `[${JSON.stringify(step)}]`
  }
  throw new FST_AUTHZ_OPTIONS('cached key', `the default key cannot tell ${what} (at arguments${path}) apart from other values, so two different calls could share one answer; pass options.key, a function of the arguments that returns a string`)
}

function kindOfObject (object: object, proto: object): string {
  const ctor = (proto as { constructor?: unknown }).constructor
  const name = typeof ctor === 'function' && ctor.name !== '' ? ctor.name : Object.prototype.toString.call(object).slice(8, -1)
  return /^[AEIOU]/.test(name) ? `an ${name}` : `a ${name}`
}

function serialize (value: unknown, trail: Array<string | number>, open: object[]): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'number':
      if (!Number.isFinite(value)) refuse(String(value), trail)
      return Object.is(value, -0) ? '-0' : String(value)
    case 'bigint':
      return `${value}n`
    case 'boolean':
      return value ? 'true' : 'false'
    case 'undefined':
      return 'undefined'
    case 'symbol':
      return refuse('a symbol', trail)
    case 'function':
      return refuse('a function', trail)
  }
  if (value === null) return 'null'
  const object = value as Record<string, unknown>
  // The objects being serialized around this one: few, so a list is cheaper than a Set.
  if (open.includes(object)) refuse('a cycle', trail)
  const proto = Object.getPrototypeOf(object)
  let out: string
  open.push(object)
  if (Array.isArray(object) && proto === Array.prototype) {
    // Own keys: the indices and `length`, nothing else (a hole leaves one out, so it shows too).
    if (Reflect.ownKeys(object).length !== object.length + 1) refuse('a sparse array or an array with extra properties', trail)
    out = '['
    for (let i = 0; i < object.length; i++) {
      if (!Object.hasOwn(object, i)) refuse('a sparse array', trail)
      trail.push(i)
      out += (i === 0 ? '' : ',') + serialize(object[i], trail, open)
      trail.pop()
    }
    out += ']'
  } else if (proto === Object.prototype || proto === null) {
    if (Object.getOwnPropertySymbols(object).length > 0) refuse('an object with symbol keys', trail)
    const names = Object.getOwnPropertyNames(object).sort()
    out = '{'
    for (let i = 0; i < names.length; i++) {
      const name = names[i]
      if (!Object.prototype.propertyIsEnumerable.call(object, name)) refuse('an object with a non-enumerable property', trail)
      trail.push(name)
      out += `${i === 0 ? '' : ','}${JSON.stringify(name)}:${serialize(object[name], trail, open)}`
      trail.pop()
    }
    out += '}'
  } else if (proto === Date.prototype) {
    let time = NaN
    try {
      time = Date.prototype.getTime.call(object)
    } catch {}
    if (Number.isNaN(time) || Reflect.ownKeys(object).length > 0) refuse('an invalid Date or a Date with extra properties', trail)
    // Tagged: a Date is not its ISO string.
    out = `Date(${time})`
  } else {
    return refuse(kindOfObject(object, proto), trail)
  }
  open.pop()
  return out
}

/**
 * The default key of `app.authz.cached`: a serialization of the arguments
 * that never gives two different argument lists one key. It represents
 * strings, finite numbers (`-0` apart from `0`), booleans, null, undefined
 * (apart from null and from a missing property), bigints, dense arrays,
 * plain objects (keys sorted, so `{ a, b }` and `{ b, a }` share an entry)
 * and valid Dates (apart from their ISO string); a value referenced twice
 * is fine, a cycle is not. Anything else (NaN, Infinity, functions,
 * symbols, Map, Set, class instances, boxed primitives, typed arrays,
 * RegExp, promises, ...) throws FST_AUTHZ_OPTIONS asking for a `key`
 * function: its identity or hidden state is not in what a key can see.
 *
 * Grammar (a value's first character, and a bigint's trailing `n`, say what
 * it is, so a key reads back one way only): `"json string"`, a number as `String(n)` or
 * `-0`, `123n`, `true`, `false`, `null`, `undefined`, `Date(ms)`,
 * `[v,v]`, `{"key":v,"key":v}`.
 */
export function stableSerialize (value: unknown): string {
  return serialize(value, [], [])
}
