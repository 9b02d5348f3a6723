/**
 * HTTP cost, counted (issue 14 point 5): CPU instructions per request of
 * each bench/http-server.ts scenario, from valgrind's callgrind, so the
 * number does not move with the load on this machine.
 *
 *   npm run build && node dist/bench/instructions.js [--n1 1000] [--n2 11000] [--repeats 2]
 *     [--warmup 10000] [--scenarios jwt,jwt-flat,jwt+plugin,plugin,plugin+handler] [--concurrency 2] [--keep]
 *
 * `run()` returns every number as a JSON-able object (bench/run.ts writes
 * BENCHMARKS.md from it); run directly, the file prints the report and the
 * JSON. Without valgrind the result is `{ skipped: 'reason' }`.
 *
 * One run is one child process, `valgrind --tool=callgrind node
 * <NODE_FLAGS> dist/bench/instructions.js --instructions-bench-child
 * <spec>`. The child builds the scenario's app with `buildServer` (the app
 * bench/http.ts measures, its 1,000 ids warmed, 50 at a time: under valgrind
 * a thousand concurrent loads outlast the resolver timeout), collects
 * garbage once (`gc()`), makes `warmup` requests (the JIT still compiles
 * for ~8,000), then `n` more, all `app.inject` of `GET
 * /generations/<id>/media` with the bench token, rotating over the ids,
 * each answered 200 (checked) and each followed by one turn of the event
 * loop (a `setImmediate`): without it, the Immediates every inject leaves
 * behind pile up (about 10 KB a request) and the heap grows through the run.
 * The `n` requests are counted alone: the child calls `os.hostname()`
 * before them and after, and callgrind (`--dump-before=*GetHostname*`)
 * writes a profile part at each call. When the parts are not there (a node
 * whose symbols hide GetHostname), the whole process is counted instead;
 * the slope removes startup either way.
 *
 * Every scenario runs at `n1` and at `n2` requests; instructions per request
 * are the slope, (count at n2 - count at n1) / (n2 - n1): what the `n2 - n1`
 * later requests cost, without what the first `n1` and the marks cost.
 * Repeats run the pairs again (scenarios in an order rotated by one per
 * repeat); the report gives the median slope and the spread (max - min over
 * the median).
 *
 * Each count is split by the function the instructions ran in (callgrind's
 * self cost, by symbol): GC (V8's heap, marking, sweeping, scavenges, write
 * barriers), JIT compilation (V8's parser and compilers), and the rest, "JS
 * and runtime": the JavaScript (JIT code has no symbol and lands here), V8's
 * builtins and runtime, Node and libc. The targets are judged on all
 * instructions; the split says where a difference comes from. GC is ~40% of
 * a request here: `app.inject` allocates ~80 KB a request, and the
 * mark-compact that follows every ~1,000 requests marks and sweeps all that
 * is resident, so the GC share grows with what an app keeps in its heap (the
 * plugin's cache, its tables, its code) at a rate set by this harness. It
 * also comes in lumps of ~100M instructions: whether one more falls between
 * n1 and n2 moves the slope by 100M / (n2 - n1), the same in every repeat
 * (runs repeat exactly), so the spread does not show it; hence the default
 * n2 - n1 of 10,000 (one lump is ~10k instructions a request), and the
 * mark-compacts of the window are reported. So are calls into V8's C++
 * runtime per request: JIT code that takes a slow path (a megamorphic or
 * generic IC, an object literal built by the runtime) shows there first.
 *
 * Scenarios (bench/http-server.ts; each declares its route in a route
 * module, an encapsulated context, as applications do): `jwt`
 * (@fastify/jwt verification only), `plugin` (the plugin's route check, all
 * hits), `plugin+handler` (the same route whose handler also awaits
 * `request.authz.generationAccess(id)`), the control `jwt+plugin` (the
 * `jwt` route in an app where the plugin is registered and its cache
 * warmed, but the route has no `config.authz`), and `jwt-flat`: the `jwt`
 * app with its route on the root instance.
 *
 * Why the route module: Node's `process.nextTick` builds its tick object
 * with an object literal whose first keys are computed (`[async_id_symbol]`).
 * In a process whose Fastify boot went through avvio's ready queue, which
 * it does when the root has a child context or any `onReady` hook, V8's
 * optimized `nextTick` defines those two keys through the runtime
 * (`Runtime_DefineKeyedOwnPropertyInLiteral`, 12 calls a request here),
 * ~15k instructions a request. Only a flat app with no `onReady` hook skips
 * that queue (fastify's "speed up start" branch). An empty child context
 * (`app.register(async () => {})`) or one `onReady` hook in `jwt-flat` is
 * enough to pay it. The plugin has `onReady` hooks, so `plugin` against
 * `jwt-flat` would count that V8 state as the plugin's; `jwt-flat` is
 * reported so the difference stays visible.
  */
import { execFile, execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { benchToken, buildServer, generationIds, type AnyScenario } from './http-server.js'
import { fixed, int, table, targetsTable, type Target } from './support/format.js'
import { describeMachine, startRun, type RunInfo } from './support/machine.js'

export const INSTRUCTION_SCENARIOS = ['jwt', 'jwt-flat', 'jwt+plugin', 'plugin', 'plugin+handler'] as const satisfies readonly AnyScenario[]
export type InstructionScenario = typeof INSTRUCTION_SCENARIOS[number]

/**
 * V8 flags of every counted child. `--single-threaded --predictable`: the
 * JIT and the GC run on the main thread, in a fixed order (without them
 * background threads make counts swing ~30%). `--predictable-gc-schedule`:
 * heap limits from allocation only, not from measured GC speed.
 * Fixed hash and random seeds. `--expose-gc` for one `gc()` after the
 * cache is warmed: the warm-up's timers fire when valgrind's clock says,
 * and the collection leaves the same heap behind whatever they did. (Not
 * right before the counted requests: a forced collection flushes code, and
 * the window would pay for recompiling it.)
 */
export const NODE_FLAGS = ['--single-threaded', '--predictable', '--predictable-gc-schedule', '--hash-seed=1', '--random-seed=1', '--expose-gc'] as const

const CHILD_FLAG = '--instructions-bench-child'
const IDS = 1000
const WARM_BATCH = 50
const DEFAULT_N1 = 1000
const DEFAULT_N2 = 11_000
const DEFAULT_REPEATS = 2
const DEFAULT_WARMUP = 10_000
/** At most this share over JWT-only, instructions per request. */
const TARGET_RATIO = 1.03
/** A child that has not finished in this long is killed. */
const CHILD_TIMEOUT_MS = 30 * 60_000
/** Callgrind's `--dump-before` pattern; the child calls `os.hostname()` at each mark. */
const MARK_FUNCTION = '*GetHostname*'

/** GC: V8's heap and collectors, write barriers included (matched anywhere in the symbol: templates start with their return type). */
const GC_SYMBOL = /v8::internal::(Heap::|Heap[A-Z]\w*::|Scaveng|MarkCompact|MinorMarkCompact|Marking|IncrementalMarking|ConcurrentMarking|MainMarkingVisitor|Sweeper|ArrayBufferSweeper|BodyDescriptor|HeapObject::SizeFromMap|LiveObject|RememberedSet|Evacuat|RecordMigrated|\w*Updating|PagedSpace|NewSpace|SemiSpace|LargeObjectSpace|Space::|MemoryAllocator|MemoryChunk|Page::|FreeList|GlobalHandles|WeakObjects|EphemeronHashTable|PretenuringHandler|WriteBarrier::Marking)|heap::base::|cppgc::|Builtins_RecordWrite/
/** A mark-compact collection. */
const MARK_COMPACT_SYMBOL = /^v8::internal::Heap::MarkCompact\(/
/** A function of V8's C++ runtime, called from JIT code or builtins through CEntry. */
const RUNTIME_SYMBOL = /^v8::internal::Runtime_/
/** JIT compilation: parsing, bytecode, Sparkplug, Maglev, TurboFan, deoptimization. */
const COMPILE_SYMBOL = /v8::internal::(compiler::|Compiler::|maglev::|baseline::|interpreter::|Parser|PreParser|Scanner|AstValueFactory|DeclarationScope|Scope::|ScopeInfo|Zone::|Deoptimizer|TranslatedState|Assembler|RelocIterator|SourcePosition|OptimizingCompileDispatcher|CompilationCache|Runtime_Compile)/

// ------------------------------------------------------------------ types

export interface InstructionsBenchOptions {
  /** Requests counted in the shorter run. Default 1,000. */
  n1?: number
  /** Requests counted in the longer run. Default 11,000 (ten thousand more: about ten mark-compacts, see GC above). */
  n2?: number
  /** Runs of each (scenario, n). Default 2 (the report gives their spread). */
  repeats?: number
  /** Requests before the counted ones (JIT and IC state settle within ~8,000). Default 10,000. */
  warmup?: number
  /** Default jwt, jwt-flat, jwt+plugin, plugin, plugin+handler. */
  scenarios?: InstructionScenario[]
  /** Children at once (each runs on one core; the count does not depend on it). Default 2. */
  concurrency?: number
  /** Keep the callgrind profiles (their directory is in the result). Default false. */
  keep?: boolean
  /** Progress lines. Default: none. */
  log?: (line: string) => void
}

/** Instructions, split by where they ran, and two counts that explain them. */
export interface Split {
  total: number
  gc: number
  compile: number
  /** JavaScript, V8 builtins and runtime, Node, libc: `total - gc - compile`. */
  rest: number
  /** Mark-compact collections (`Heap::MarkCompact` calls). */
  markCompacts: number
  /** Calls into V8's C++ runtime (`Runtime_*`): slow paths of the JIT code (IC misses, generic stores, allocation). */
  runtimeCalls: number
}

const SPLIT_KEYS = ['total', 'gc', 'compile', 'rest', 'markCompacts', 'runtimeCalls'] as const satisfies ReadonlyArray<keyof Split>

function splitOf (value: (key: keyof Split) => number): Split {
  return Object.fromEntries(SPLIT_KEYS.map((key) => [key, value(key)])) as unknown as Split
}

export interface InstructionsRun {
  scenario: InstructionScenario
  repeat: number
  /** Requests counted. */
  n: number
  /** `window`: the n requests alone (profile parts); `process`: the whole child. */
  counted: 'window' | 'process'
  instructions: Split
  wallMs: number
}

export interface ScenarioResult {
  scenario: InstructionScenario
  /** Median over repeats of the slope, instructions per request. */
  perRequest: Split
  /** The slope of each repeat. */
  slopes: Split[]
  /** (max - min) / median of the repeats' slopes. */
  spread: { total: number, rest: number }
}

export interface InstructionsBenchOk extends RunInfo {
  skipped?: undefined
  valgrind: string
  nodeFlags: string[]
  n1: number
  n2: number
  repeats: number
  warmup: number
  ids: number
  scenarios: ScenarioResult[]
  /** Against `jwt`, of the median slopes: `total` is what the targets judge. */
  ratios: Array<{ scenario: InstructionScenario, total: number, rest: number }>
  /** `plugin` against the control `jwt+plugin`: the route check alone. */
  checkAlone?: { total: number, rest: number }
  targets: Target[]
  runs: InstructionsRun[]
  /** Where the profiles are, with `keep`. */
  profiles?: string
}

export type InstructionsBenchResult = InstructionsBenchOk | { skipped: string }

interface ChildSpec { scenario: InstructionScenario, n: number, warmup: number }

// ------------------------------------------------------------------ child

async function child (spec: ChildSpec): Promise<void> {
  if (typeof gc !== 'function') throw new Error('run the child with --expose-gc')
  const server = await buildServer(spec.scenario, { ids: IDS, warmBatch: WARM_BATCH })
  gc()
  const app = server.app
  const urls = generationIds(IDS).map((id) => `/generations/${id}/media`)
  const headers = { authorization: `Bearer ${benchToken()}` }
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
  const requests = async (count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const response = await app.inject({ method: 'GET', url: urls[i % urls.length], headers })
      if (response.statusCode !== 200) throw new Error(`${spec.scenario}: ${response.statusCode} ${response.body}`)
      await turn()
    }
  }
  await requests(spec.warmup)
  os.hostname()
  await requests(spec.n)
  os.hostname()
  await app.close()
  await server.cleanup()
}

// ------------------------------------------------------------------ profiles

/** Instructions of one callgrind profile (part), split by the symbol they ran in. */
export function splitProfile (text: string): Split {
  const names = new Map<string, string>()
  const bySymbol = new Map<string, number>()
  let fn = ''
  let callee = ''
  let inclusiveNext = false
  let total = -1
  let markCompacts = 0
  let runtimeCalls = 0
  for (const line of text.split('\n')) {
    const c = line.charCodeAt(0)
    // Cost lines start with a position: a digit, '+', '-' or '*'.
    if ((c >= 48 && c <= 57) || c === 43 || c === 45 || c === 42) {
      if (inclusiveNext) {
        // The line after `calls=` is the callee's inclusive cost, not this function's.
        inclusiveNext = false
        continue
      }
      const space = line.indexOf(' ')
      if (space === -1) continue
      const cost = Number(line.slice(space + 1).split(' ')[0])
      if (Number.isFinite(cost)) bySymbol.set(fn, (bySymbol.get(fn) ?? 0) + cost)
    } else if (line.startsWith('fn=')) {
      fn = symbolName(names, line.slice(3))
    } else if (line.startsWith('cfn=')) {
      // A callee's name may be defined here first and used by a later `fn=(id)`.
      callee = symbolName(names, line.slice(4))
    } else if (line.startsWith('calls=')) {
      inclusiveNext = true
      const count = Number(line.slice(6).split(' ')[0])
      if (callee !== fn && MARK_COMPACT_SYMBOL.test(callee)) markCompacts += count
      if (callee !== fn && RUNTIME_SYMBOL.test(callee) && !RUNTIME_SYMBOL.test(fn)) runtimeCalls += count
    } else if (line.startsWith('summary:') || line.startsWith('totals:')) {
      total = Number(line.split(/\s+/)[1])
    }
  }
  let gcCost = 0
  let compileCost = 0
  let sum = 0
  for (const [symbol, cost] of bySymbol) {
    sum += cost
    if (GC_SYMBOL.test(symbol)) gcCost += cost
    else if (COMPILE_SYMBOL.test(symbol)) compileCost += cost
  }
  const all = total >= 0 ? total : sum
  return { total: all, gc: gcCost, compile: compileCost, rest: all - gcCost - compileCost, markCompacts, runtimeCalls }
}

/** `(12) name` defines id 12, `(12)` refers to it (callgrind's name compression, one table for `fn=` and `cfn=`). */
function symbolName (names: Map<string, string>, field: string): string {
  const match = /^\((\d+)\)(?: (.*))?$/.exec(field.trim())
  if (match === null) return field.trim()
  if (match[2] !== undefined) names.set(match[1], match[2])
  return names.get(match[1]) ?? field
}

function addSplit (a: Split, b: Split): Split {
  return splitOf((key) => a[key] + b[key])
}

// ------------------------------------------------------------------ runs

function valgrindVersion (): string | undefined {
  try {
    return execFileSync('valgrind', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return undefined
  }
}

async function countRun (dir: string, spec: ChildSpec, repeat: number): Promise<InstructionsRun> {
  const base = join(dir, `${spec.scenario.replace(/\W/g, '_')}-${spec.n}-${repeat}.out`)
  const script = fileURLToPath(import.meta.url)
  const args = [
    '--tool=callgrind',
    `--dump-before=${MARK_FUNCTION}`,
    `--callgrind-out-file=${base}`,
    process.execPath, ...NODE_FLAGS, script, CHILD_FLAG, JSON.stringify(spec)
  ]
  const t0 = performance.now()
  await new Promise<void>((resolve, reject) => {
    execFile('valgrind', args, { timeout: CHILD_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 }, (error, _stdout, stderr) => {
      if (error === null) resolve()
      else reject(new Error(`${spec.scenario} n=${spec.n}: ${error.message}\n${stderr.split('\n').filter((l) => !l.startsWith('==')).slice(-20).join('\n')}`))
    })
  })
  const wallMs = Math.round(performance.now() - t0)
  // Parts: .1 startup and warm-up, .2 the n requests, then the base file (close and exit).
  const window = `${base}.2`
  const parts = readdirSync(dir).filter((f) => f.startsWith(`${base.slice(dir.length + 1)}.`))
  if (parts.length === 2 && existsSync(window)) {
    return { scenario: spec.scenario, repeat, n: spec.n, counted: 'window', instructions: splitProfile(readFileSync(window, 'utf8')), wallMs }
  }
  let whole = splitOf(() => 0)
  for (const file of [base, ...parts.map((p) => join(dir, p))]) whole = addSplit(whole, splitProfile(readFileSync(file, 'utf8')))
  return { scenario: spec.scenario, repeat, n: spec.n, counted: 'process', instructions: whole, wallMs }
}

function median (values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

function spreadOf (values: number[]): number {
  const m = median(values)
  return m === 0 ? 0 : (Math.max(...values) - Math.min(...values)) / m
}

export async function run (options: InstructionsBenchOptions = {}): Promise<InstructionsBenchResult> {
  const log = options.log ?? (() => {})
  const n1 = options.n1 ?? DEFAULT_N1
  const n2 = options.n2 ?? DEFAULT_N2
  const repeats = options.repeats ?? DEFAULT_REPEATS
  const warmup = options.warmup ?? DEFAULT_WARMUP
  const scenarios = options.scenarios ?? [...INSTRUCTION_SCENARIOS]
  const concurrency = Math.max(1, options.concurrency ?? 2)
  for (const [name, value] of Object.entries({ n1, n2, repeats, warmup })) {
    if (!Number.isInteger(value) || value < (name === 'warmup' ? 0 : 1)) throw new TypeError(`${name} must be a positive integer, got ${value}`)
  }
  if (n2 <= n1) throw new TypeError(`n2 (${n2}) must be greater than n1 (${n1})`)
  for (const s of scenarios) if (!INSTRUCTION_SCENARIOS.includes(s)) throw new TypeError(`unknown scenario ${JSON.stringify(s)} (known: ${INSTRUCTION_SCENARIOS.join(', ')})`)

  const valgrind = valgrindVersion()
  if (valgrind === undefined) return { skipped: 'valgrind is not installed (apt-get install valgrind)' }

  const finish = startRun(['fastify', '@fastify/jwt', 'fast-jwt', 'light-my-request', 'quick-lru'])
  const dir = mkdtempSync(join(os.tmpdir(), 'authz-instructions-'))
  const queue: Array<{ spec: ChildSpec, repeat: number }> = []
  for (let r = 0; r < repeats; r++) {
    for (let k = 0; k < scenarios.length; k++) {
      const scenario = scenarios[(k + r) % scenarios.length]
      for (const n of [n1, n2]) queue.push({ spec: { scenario, n, warmup }, repeat: r })
    }
  }
  const runs: InstructionsRun[] = []
  let done = 0
  const worker = async (): Promise<void> => {
    for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
      const result = await countRun(dir, job.spec, job.repeat)
      runs.push(result)
      done++
      log(`  [${done}/${repeats * scenarios.length * 2}] ${job.spec.scenario} n=${job.spec.n} repeat ${job.repeat + 1}: ${int(result.instructions.total)} instructions (${result.counted}), ${(result.wallMs / 1000).toFixed(0)} s`)
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker))
  } finally {
    if (options.keep !== true) rmSync(dir, { recursive: true, force: true })
  }

  const results: ScenarioResult[] = scenarios.map((scenario) => {
    const slopes: Split[] = []
    for (let r = 0; r < repeats; r++) {
      const at = (n: number): Split => (runs.find((x) => x.scenario === scenario && x.repeat === r && x.n === n) as InstructionsRun).instructions
      const a = at(n1)
      const b = at(n2)
      slopes.push(splitOf((key) => (b[key] - a[key]) / (n2 - n1)))
    }
    return {
      scenario,
      perRequest: splitOf((key) => median(slopes.map((s) => s[key]))),
      slopes,
      spread: { total: spreadOf(slopes.map((s) => s.total)), rest: spreadOf(slopes.map((s) => s.rest)) }
    }
  })
  const jwt = results.find((r) => r.scenario === 'jwt')
  const ratios = jwt === undefined
    ? []
    : results.filter((r) => r.scenario !== 'jwt').map((r) => ({ scenario: r.scenario, total: r.perRequest.total / jwt.perRequest.total, rest: r.perRequest.rest / jwt.perRequest.rest }))
  const control = results.find((r) => r.scenario === 'jwt+plugin')
  const plugin = results.find((r) => r.scenario === 'plugin')
  const checkAlone = control === undefined || plugin === undefined
    ? undefined
    : { total: plugin.perRequest.total / control.perRequest.total, rest: plugin.perRequest.rest / control.perRequest.rest }
  const targets: Target[] = (['plugin', 'plugin+handler'] as const).map((scenario) => {
    const ratio = ratios.find((x) => x.scenario === scenario)
    const name = `${scenario} at most ${TARGET_RATIO}x JWT-only instructions per request${scenario === 'plugin+handler' ? ', request.authz used in the handler too' : ''}`
    return ratio === undefined
      ? { name, pass: null, detail: 'not run (needs jwt and this scenario)' }
      : { name, pass: ratio.total <= TARGET_RATIO, detail: `${fixed(ratio.total, 3)}x (JS and runtime alone, without GC and JIT compilation: ${fixed(ratio.rest, 3)}x)` }
  })
  return {
    ...finish(),
    valgrind,
    nodeFlags: [...NODE_FLAGS],
    n1,
    n2,
    repeats,
    warmup,
    ids: IDS,
    scenarios: results,
    ratios,
    ...(checkAlone === undefined ? {} : { checkAlone }),
    targets,
    runs: runs.sort((a, b) => a.scenario.localeCompare(b.scenario) || a.repeat - b.repeat || a.n - b.n),
    ...(options.keep === true ? { profiles: dir } : {})
  }
}

// ------------------------------------------------------------------ report

function percent (share: number): string {
  return `${fixed(share * 100, 1)} %`
}

export function formatResult (r: InstructionsBenchResult): string {
  if (r.skipped !== undefined) return `Skipped: ${r.skipped}`
  const out: string[] = []
  out.push(targetsTable(r.targets))
  out.push('')
  out.push(`Instructions per request: the slope between ${int(r.n1)} and ${int(r.n2)} counted requests (\`app.inject\`, after ${int(r.warmup)} warm-up requests, all ${int(r.ids)} ids warmed), median of ${r.repeats} repeats; callgrind (${r.valgrind}) on \`node ${r.nodeFlags.join(' ')}\`. "JS and runtime" is everything but GC and JIT compilation; mark-compacts are those of the ${int(r.n2 - r.n1)} requests between the two counts; runtime calls are calls into V8's C++ runtime.`)
  out.push('')
  const jwt = r.scenarios.find((s) => s.scenario === 'jwt')
  out.push(table(
    ['scenario', 'all', 'JS and runtime', 'GC', 'JIT compilation', 'all / jwt', 'JS and runtime / jwt', 'spread (all / JS and runtime)', 'mark-compacts', 'runtime calls / request'],
    r.scenarios.map((s) => [
      s.scenario,
      int(Math.round(s.perRequest.total)),
      int(Math.round(s.perRequest.rest)),
      int(Math.round(s.perRequest.gc)),
      int(Math.round(s.perRequest.compile)),
      jwt === undefined ? 'n/a' : `${fixed(s.perRequest.total / jwt.perRequest.total, 3)}x`,
      jwt === undefined ? 'n/a' : `${fixed(s.perRequest.rest / jwt.perRequest.rest, 3)}x`,
      `${percent(s.spread.total)} / ${percent(s.spread.rest)}`,
      int(Math.round(s.perRequest.markCompacts * (r.n2 - r.n1))),
      fixed(s.perRequest.runtimeCalls, 1)
    ]),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']
  ))
  if (r.checkAlone !== undefined) {
    out.push('')
    out.push(`The route check alone, \`plugin\` against the control \`jwt+plugin\` (same app, the route without \`config.authz\`): ${fixed(r.checkAlone.total, 3)}x all instructions, ${fixed(r.checkAlone.rest, 3)}x JS and runtime.`)
  }
  out.push('')
  out.push('Runs (instructions counted, all / JS and runtime):')
  out.push('')
  out.push(table(
    ['scenario', 'repeat', `n = ${int(r.n1)}`, `n = ${int(r.n2)}`, 'slope', 'counted'],
    r.scenarios.flatMap((s) => s.slopes.map((slope, i) => {
      const at = (n: number): InstructionsRun | undefined => r.runs.find((x) => x.scenario === s.scenario && x.repeat === i && x.n === n)
      const cell = (x: InstructionsRun | undefined): string => x === undefined ? 'n/a' : `${int(x.instructions.total)} / ${int(x.instructions.rest)}`
      return [s.scenario, String(i + 1), cell(at(r.n1)), cell(at(r.n2)), `${int(Math.round(slope.total))} / ${int(Math.round(slope.rest))}`, at(r.n1)?.counted ?? 'n/a']
    })),
    ['l', 'r', 'r', 'r', 'r', 'l']
  ))
  out.push('')
  out.push(`Machine: ${describeMachine(r.machine, r.packages)}. Took ${(r.durationMs / 1000).toFixed(0)} s.${r.profiles === undefined ? '' : ` Profiles: ${r.profiles}`}`)
  return out.join('\n')
}

// ------------------------------------------------------------------ main

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === CHILD_FLAG) {
    child(JSON.parse(process.argv[3]) as ChildSpec).catch((error: Error) => {
      process.stderr.write(`${error.stack ?? error.message}\n`)
      process.exit(1)
    })
  } else {
    const { values } = parseArgs({
      options: {
        n1: { type: 'string' },
        n2: { type: 'string' },
        repeats: { type: 'string' },
        warmup: { type: 'string' },
        scenarios: { type: 'string' },
        concurrency: { type: 'string' },
        keep: { type: 'boolean' }
      }
    })
    const num = (v: string | undefined): number | undefined => v === undefined ? undefined : Number(v)
    const result = await run({
      n1: num(values.n1),
      n2: num(values.n2),
      repeats: num(values.repeats),
      warmup: num(values.warmup),
      scenarios: values.scenarios?.split(',').map((s) => s.trim()) as InstructionScenario[] | undefined,
      concurrency: num(values.concurrency),
      keep: values.keep,
      log: (line) => process.stderr.write(`${line}\n`)
    })
    process.stdout.write(`${formatResult(result)}\n\n${JSON.stringify(result, null, 2)}\n`)
  }
}
