import { test } from 'tap'
import { prng } from '../bench/support/random.js'
import { belady, formatResult, run, TRACE_NAMES } from '../bench/hit-ratio.js'

/** OPT by brute force: on a miss into a full cache, scan forward for each cached key's next request. */
function bruteForceOpt (trace: Uint32Array, capacity: number): number {
  const cached = new Set<number>()
  let hits = 0
  for (let i = 0; i < trace.length; i++) {
    const k = trace[i]
    if (cached.has(k)) {
      hits++
      continue
    }
    if (cached.size >= capacity) {
      let victim = -1
      let furthest = -1
      for (const c of cached) {
        let next = trace.indexOf(c, i + 1)
        if (next === -1) next = Infinity
        if (next > furthest) {
          furthest = next
          victim = c
        }
      }
      cached.delete(victim)
    }
    cached.add(k)
  }
  return hits
}

function lruHits (trace: Uint32Array, capacity: number): number {
  const cache = new Map<number, true>()
  let hits = 0
  for (const k of trace) {
    if (cache.delete(k)) hits++
    else if (cache.size >= capacity) cache.delete(cache.keys().next().value as number)
    cache.set(k, true)
  }
  return hits
}

test('belady() is exact OPT under demand paging: it matches a brute-force search and never loses to LRU', async (t) => {
  for (let seed = 1; seed <= 20; seed++) {
    const next = prng(seed)
    const keys = 5 + (next() % 60)
    const capacity = 1 + (next() % 20)
    const trace = new Uint32Array(1500)
    // Skewed: the square of a uniform draw favours low ranks.
    for (let i = 0; i < trace.length; i++) trace[i] = Math.floor(((next() / 2 ** 32) ** 2) * keys)
    const outcome = new Uint8Array(trace.length)
    const hits = belady(trace, capacity, keys, outcome)
    t.equal(hits, bruteForceOpt(trace, capacity), `seed ${seed}: ${keys} keys, capacity ${capacity}`)
    t.equal(outcome.reduce((a, b) => a + b, 0), hits, 'outcome marks exactly the hits')
    t.ok(hits >= lruHits(trace, capacity), 'OPT >= LRU')
  }
})

test('a small run covers every trace, reports every contender and is deterministic', async (t) => {
  const options = { requests: 40_000, denials: 2000, scanBurst: 1000 }
  const result = await run(options)
  t.same(result.traces.map((r) => r.name), TRACE_NAMES.filter((n) => n !== 'denials'))
  for (const r of result.traces) {
    for (const c of ['tinylfu', 'clock', 'lru', 'belady'] as const) {
      const h = r.contenders[c].hitPercent
      t.ok(h >= 0 && h <= 100, `${r.name} ${c}: ${h}`)
    }
    // Both are demand paging: OPT is an upper bound on them.
    t.ok(r.contenders.belady.hits >= r.contenders.lru.hits, `${r.name}: Belady >= lru-cache`)
    t.ok(r.contenders.belady.hits >= r.contenders.clock.hits, `${r.name}: Belady >= CLOCK`)
  }
  const scan = result.traces.find((r) => r.name === 'scan')?.scan
  t.equal(scan?.bursts, 10)
  t.ok((scan?.hot.belady.firstRequestHitPercent ?? 0) > (scan?.hot.lru.firstRequestHitPercent ?? 100), 'OPT evicts one-shot keys first; LRU loses the hot keys to the burst')
  const d = result.denials
  t.ok(d !== undefined)
  t.equal(d?.contenders.belady.extraGrantMisses, 0, '5,000 grant keys fit in 10,000 entries: OPT reloads none')
  t.equal(d?.contenders.tinylfu.denialMisses, 2000, 'every denial is a new id')
  const text = formatResult(result)
  t.match(text, /^Machine: /)
  t.match(text, '| target | result | measured |')
  t.match(text, '### Denials must not crowd out grants')
  const again = await run({ ...options, only: ['zipf-1.0', 'denials'] })
  const first = result.traces.find((r) => r.name === 'zipf-1.0')
  t.same(again.traces[0].contenders.lru.hits, first?.contenders.lru.hits, 'same seed, same trace')
  t.same(again.traces[0].contenders.tinylfu.hits, first?.contenders.tinylfu.hits)
  t.same(again.denials?.contenders.clock.grantMisses, d?.contenders.clock.grantMisses)
})

test('run() rejects an unknown trace name', async (t) => {
  await t.rejects(run({ only: ['nope' as never] }), /unknown trace "nope"/)
})
