#!/usr/bin/env node
/**
 * `npx authz-cache perf [--config development|production] [--iterations N]
 *   [--latency-ms N] [--concurrency N] [--workload projects|dashboard|scroll|views]
 *   [--think-ms N] [--warming on|off] [--batching on|off] [--warmup N]`
 *
 * Runs the seed's performance test through the real plugin and the example
 * service's resolvers (embedded PGlite, simulated backend latency) and
 * prints ✅/❌ lines against the preset's targets; exits 1 when a target is
 * missed, 2 on bad arguments. The workload lives with the example service,
 * so the command runs from a clone of the repository.
 */
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

export interface PerfArgs {
  config: 'development' | 'production'
  iterations: number
  latencyMs: number
  concurrency: number
  workload?: 'projects' | 'dashboard' | 'scroll' | 'views'
  thinkMs?: number
  warming?: boolean
  batching?: boolean
  warmup?: number
  /** PostgreSQL instead of the embedded PGlite: the DATABASE_URL environment variable. */
  databaseUrl?: string
}

const USAGE = 'usage: authz-cache perf [--config development|production] [--iterations N] [--latency-ms N] [--concurrency N] [--workload projects|dashboard|scroll|views] [--think-ms N] [--warming on|off] [--batching on|off] [--warmup N]'

const HELP = `Runs the performance test of fastify-authz-cache through the real plugin and the
example service (a generative-media API: users, teams, projects, generations) on
an embedded PGlite database, or on PostgreSQL when DATABASE_URL is set (schema
authz_perf, dropped afterwards), with a SIMULATED backend latency on every
resolver call. Prints the average time per check and the hit rate against the
preset's targets; exits 0 when they are met, 1 when one is missed, 2 on bad
arguments or a missing package.

  --config development|production   preset (default production)
  --iterations N                    requests measured (default 20000)
  --warmup N                        requests run first, unmeasured (default: --iterations)
  --latency-ms N                    simulated backend latency (default 120)
  --concurrency N                   sessions at once (default 16)
  --workload projects|dashboard|scroll|views   traffic shape (default projects)
  --think-ms N                      pause between the pages of a session (default 300)
  --warming on|off                  predictive warming (default: the preset's)
  --batching on|off                 batch resolvers for lists (default on)

Needs @fastify/jwt, and @electric-sql/pglite (or pg with DATABASE_URL).`

/** Parses the command line; throws an Error naming the bad argument. */
export function parseArgs (argv: string[]): PerfArgs {
  const [command, ...rest] = argv
  if (command !== 'perf') throw new Error(command === undefined ? 'missing command' : `unknown command ${JSON.stringify(command)}`)
  const args: PerfArgs = { config: 'production', iterations: 20_000, latencyMs: 120, concurrency: 16 }
  const onOff = (name: string, value: string): boolean => {
    if (value !== 'on' && value !== 'off') throw new Error(`${name} must be on or off, got ${JSON.stringify(value)}`)
    return value === 'on'
  }
  for (let i = 0; i < rest.length; i++) {
    const [flag, inline] = rest[i].split('=', 2)
    const value = inline ?? rest[++i]
    if (value === undefined) throw new Error(`${flag} needs a value`)
    const int = (name: string, min: number, max: number): number => {
      const n = Number(value)
      if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`)
      return n
    }
    switch (flag) {
      case '--config':
        if (value !== 'development' && value !== 'production') throw new Error(`--config must be development or production, got ${JSON.stringify(value)}`)
        args.config = value
        break
      case '--iterations': args.iterations = int('--iterations', 1, 10_000_000); break
      case '--latency-ms': args.latencyMs = int('--latency-ms', 0, 60_000); break
      case '--concurrency': args.concurrency = int('--concurrency', 1, 1000); break
      case '--workload':
        if (value !== 'projects' && value !== 'dashboard' && value !== 'scroll' && value !== 'views') throw new Error(`--workload must be projects, dashboard, scroll or views, got ${JSON.stringify(value)}`)
        args.workload = value
        break
      case '--think-ms': args.thinkMs = int('--think-ms', 0, 60_000); break
      case '--warming': args.warming = onOff('--warming', value); break
      case '--batching': args.batching = onOff('--batching', value); break
      case '--warmup': args.warmup = int('--warmup', 0, 10_000_000); break
      default: throw new Error(`unknown option ${JSON.stringify(flag)}`)
    }
  }
  return args
}

async function main (): Promise<number> {
  let args: PerfArgs
  const argv = process.argv.slice(2)
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    process.stdout.write(`${USAGE}\n\n${HELP}\n`)
    return argv.length === 0 ? 2 : 0
  }
  try {
    args = parseArgs(argv)
    const databaseUrl = process.env.DATABASE_URL
    if (databaseUrl !== undefined && databaseUrl !== '') args.databaseUrl = databaseUrl
  } catch (error) {
    process.stderr.write(`authz-cache: ${(error as Error).message}\n${USAGE}\n`)
    return 2
  }
  let perf: { runPerf: (args: PerfArgs, out: (line: string) => void) => Promise<boolean> }
  try {
    perf = await import('../../examples/perf.js')
  } catch (error) {
    const missing = /Cannot find (?:package|module) '([^']+)'/.exec((error as Error).message)?.[1]
    process.stderr.write(missing === undefined
      ? `authz-cache: the perf workload could not be loaded: ${(error as Error).message}\n`
      : `authz-cache: the perf workload needs ${missing}: npm install --no-save ${missing}\n`)
    return 2
  }
  try {
    const ok = await perf.runPerf(args, (line) => process.stdout.write(line + '\n'))
    return ok ? 0 : 1
  } catch (error) {
    // A database package missing (./examples/db.ts says which), or the database unreachable.
    process.stderr.write(`authz-cache: ${(error as Error).message}\n`)
    return 2
  }
}

/** True when this file is the program (also through npm's bin symlink). */
function isMain (): boolean {
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1] ?? '')).href
  } catch {
    return false
  }
}

if (isMain()) {
  main().then((code) => { process.exitCode = code }, (error: Error) => {
    process.stderr.write(`authz-cache: ${error.stack ?? error.message}\n`)
    process.exitCode = 1
  })
}
