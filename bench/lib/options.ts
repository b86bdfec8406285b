// Command-line options of `npm run bench -- [options]`, parsed and checked in one place; every bad
// value is reported together, like the gateway's own config.
import { isProfileName, type ProfileName } from '../sim/traffic-profile.js';
import type { StackName } from '../stacks/stack.js';
import { BUSY_RETRY_BUDGET_MS } from '../load/load-plan.js';

/** One user's setup may wait out a whole busy-retry budget on one call, and then finish. */
const DEFAULT_SETUP_TIMEOUT_S = BUSY_RETRY_BUDGET_MS / 1000 + 30;

/** How a simulated desktop's RFB socket reaches the simulator (BenchOptions.desktopLink). */
export type DesktopLink = 'handoff' | 'socat';

export interface BenchOptions {
  /** Concurrent virtual users; several values = one step per value (the chart's x axis). */
  users: number[];
  rampSeconds: number;
  holdSeconds: number;
  profile: ProfileName;
  stacks: StackName[];
  workers: number;
  /** sshd "instances" the CloudDesk users' desktops are spread over (user i on instance i mod n). */
  instances: number;
  /**
   * Virtual users per account (a person with K desktops open in K tabs): they share one sign-in, and each
   * registers an instance of its own, so each still has its own session and desktop. 1 = every user its
   * own account (the plan's scenario).
   */
  sessionsPerAccount: number;
  store: 'sqlite' | 'postgres';
  redis: boolean;
  loadWorkers: number;
  /**
   * How a simulated desktop's RFB socket reaches the simulator: `handoff` (the fake Xvnc hands its
   * listening socket over and the simulator accepts on it, nothing in between, as with a real Xvnc) or
   * `socat` (a relaying process per viewer; one descriptor fewer in the simulator). run.ts falls back to
   * socat when the simulator's open-file limit cannot hold the hand-off's two descriptors per desktop.
   */
  desktopLink: DesktopLink;
  echoIntervalMs: number;
  stall: number;
  stallSeconds: number;
  findMax: boolean;
  maxUsers: number;
  findMaxSeconds: number;
  cpuProf: boolean;
  /** `--pin`: the gateway on one CPU, everything else on another (lib/pinning.ts). */
  pin: { gatewayCpu: number; restCpu: number } | null;
  /** `--load-cpu-prof`: run the load generators with --cpu-prof (profiles beside the gateway's). */
  loadCpuProf: boolean;
  outDir: string;
  label: string | null;
  setupTimeoutSeconds: number;
  seed: number;
  gatewayEnv: Record<string, string>;
  /** Control-plane load during the hold (--mixed): sign-ins and connects per second; null = none. */
  mixed: { loginsPerSecond: number; connectsPerSecond: number } | null;
  /**
   * `--control-process`: with --mixed, the control-plane load goes to a second CloudDesk process of its
   * own (its own store, the same instances and CPU placement), so the measured one only relays: what a
   * split into relay and control-plane processes would give the relay, measured before it is built.
   */
  controlProcess: boolean;
  /**
   * `--roles`: CloudDesk as an api process (GATEWAY_ROLE=api: sign-ins, connects, the control load) and a
   * relay process (GATEWAY_ROLE=relay: the viewers' WebSockets), on PostgreSQL and Redis.
   */
  roles: boolean;
  /** With --cpu-prof: event-loop stretches longer than this are listed as long tasks. */
  longTaskMs: number;
  help: boolean;
}

export const usage = `npm run bench -- [options]

  --users N[,N…]        concurrent virtual users; a list runs one step per value   (default 50)
  --ramp S              seconds over which the users arrive                          (default 10)
  --hold S              seconds every session is held open and measured               (default 20)
  --profile P           still | idle | office | video (~0.4 kbit/s | 10 kbit/s | 1 Mbit/s | 5 Mbit/s each) (default office)
  --compare             run the floor (direct TCP), websockify + ssh -L, the bare ws → ssh2 prototype, CloudDesk
  --stacks a,b          pick stacks: direct, diy, bare (the ws → ssh2 prototype), clouddesk (default clouddesk)
  --workers N           gateway cluster workers (WORKERS=N)                          (default 1)
  --instances N         sshd instances (each its own port and OS user) the users'
                        desktops are spread over, user i on instance i mod N          (default 1)
  --sessions-per-account K  virtual users per account: one sign-in shared by K users
                        (tabs), each with its own instance and desktop             (default 1)
  --store sqlite|postgres   gateway store (postgres: a fresh database on 127.0.0.1:5432)
  --redis               private redis-server for the gateway's coordination
  --load-workers N      load-generator processes                                     (default 1)
  --desktop-link L      handoff | socat: the simulated desktop's RFB socket handed to the
                        simulator, or joined to it by a socat per viewer (one more hop;
                        used anyway when descriptors run short)                      (default handoff)
  --echo-interval MS    input-marker period per viewer                               (default 1000)
  --stall N             N viewers stop reading after the hold (stalled browsers)     (default 0)
  --stall-secs S        how long they stay stalled before memory is read             (default 10)
  --find-max            ramp the user count (×1.5 a step) until a target breaks
  --max-users N         upper bound for --find-max                                   (default 3000)
  --find-max-secs S     time bound for --find-max                                    (default 1800)
  --cpu-prof            run the gateway with --cpu-prof (profiles in the results folder)
  --load-cpu-prof       run the load generators with --cpu-prof (same folder)
  --pin [G,R]           the gateway (and the peer standing where it stands) on CPU G,
                        everything else (sshd, desktops, simulator, load generators,
                        redis, PostgreSQL) on CPU R, with taskset; reports each core's use (default 0,1)
  --gateway-env K=V     extra gateway environment (repeatable)
  --mixed               during the hold, also 20 sign-ins/s and 5 connects/s (each connect
                        disconnected at once) from a process of their own
  --mixed-rates L,C     sign-ins and connects per second for --mixed                  (default 20,5)
  --control-process     with --mixed, send the control-plane load to a second CloudDesk process
                        (same CPU placement), so the measured one only relays: a relay /
                        control-plane split, measured before it is built; both charged as gateway
  --roles               CloudDesk as an api process and a relay process (GATEWAY_ROLE), viewers
                        on the relay; needs --store postgres --redis; both charged as gateway
  --long-task-ms MS     with --cpu-prof: list the gateway's event-loop stretches longer than
                        this during the hold, by what they ran                       (default 10)
  --out DIR             results folder                                               (default bench/results)
  --label NAME          name of the result files                                     (default from the options)
  --setup-timeout S     give up on one user's setup after S seconds; the default covers
                        one call's 2-minute busy-retry budget                       (default 150)
  --seed N              seed of the simulated screen traffic                         (default 1)
`;

export function parseOptions(argv: string[]): BenchOptions {
  const o: BenchOptions = {
    users: [50],
    rampSeconds: 10,
    holdSeconds: 20,
    profile: 'office',
    stacks: ['clouddesk'],
    workers: 1,
    instances: 1,
    sessionsPerAccount: 1,
    store: 'sqlite',
    redis: false,
    loadWorkers: 1,
    desktopLink: 'handoff',
    echoIntervalMs: 1000,
    stall: 0,
    stallSeconds: 10,
    findMax: false,
    maxUsers: 3000,
    findMaxSeconds: 1800,
    cpuProf: false,
    pin: null,
    loadCpuProf: false,
    outDir: 'bench/results',
    label: null,
    setupTimeoutSeconds: DEFAULT_SETUP_TIMEOUT_S,
    seed: 1,
    gatewayEnv: {},
    mixed: null,
    controlProcess: false,
    roles: false,
    longTaskMs: 10,
    help: false,
  };
  const problems: string[] = [];
  const num = (flag: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || n > max) {
      problems.push(`${flag} needs a number from ${min} to ${max} (got ${v ?? 'nothing'})`);
      return min;
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = () => argv[++i];
    switch (flag) {
      case '--users': {
        const v = value();
        o.users = (v ?? '').split(',').map((s) => Math.round(num('--users', s, 1, 20_000)));
        break;
      }
      case '--ramp':
        o.rampSeconds = num(flag, value(), 0, 3600);
        break;
      case '--hold':
        o.holdSeconds = num(flag, value(), 1, 3600);
        break;
      case '--profile': {
        const v = value() ?? '';
        if (isProfileName(v)) o.profile = v;
        else problems.push(`--profile must be still, idle, office or video (got ${v})`);
        break;
      }
      case '--compare':
        o.stacks = ['direct', 'diy', 'bare', 'clouddesk'];
        break;
      case '--stacks': {
        const names = (value() ?? '').split(',');
        const ok = names.filter(
          (n): n is StackName => n === 'direct' || n === 'diy' || n === 'bare' || n === 'clouddesk',
        );
        if (ok.length !== names.length || ok.length === 0)
          problems.push('--stacks takes direct, diy, bare, clouddesk');
        o.stacks = ok;
        break;
      }
      case '--workers':
        o.workers = Math.round(num(flag, value(), 1, 64));
        break;
      case '--instances':
        o.instances = Math.round(num(flag, value(), 1, 64));
        break;
      case '--sessions-per-account':
        o.sessionsPerAccount = Math.round(num(flag, value(), 1, 1000));
        break;
      case '--store': {
        const v = value();
        if (v === 'sqlite' || v === 'postgres') o.store = v;
        else problems.push('--store must be sqlite or postgres');
        break;
      }
      case '--redis':
        o.redis = true;
        break;
      case '--load-workers':
        o.loadWorkers = Math.round(num(flag, value(), 1, 16));
        break;
      case '--desktop-link': {
        const v = value();
        if (v === 'handoff' || v === 'socat') o.desktopLink = v;
        else problems.push(`--desktop-link must be handoff or socat (got ${v ?? 'nothing'})`);
        break;
      }
      case '--echo-interval':
        o.echoIntervalMs = num(flag, value(), 50, 60_000);
        break;
      case '--stall':
        o.stall = Math.round(num(flag, value(), 0, 20_000));
        break;
      case '--stall-secs':
        o.stallSeconds = num(flag, value(), 1, 600);
        break;
      case '--find-max':
        o.findMax = true;
        break;
      case '--max-users':
        o.maxUsers = Math.round(num(flag, value(), 1, 20_000));
        break;
      case '--find-max-secs':
        o.findMaxSeconds = num(flag, value(), 10, 86_400);
        break;
      case '--cpu-prof':
        o.cpuProf = true;
        break;
      case '--load-cpu-prof':
        o.loadCpuProf = true;
        break;
      case '--pin': {
        // The CPUs are optional: `--pin` alone is `--pin 0,1`.
        const v = argv[i + 1];
        if (v !== undefined && /^\d+,\d+$/.test(v)) {
          i++;
          const [g, r] = v.split(',').map(Number) as [number, number];
          if (g === r) problems.push(`--pin needs two different CPUs (got ${v})`);
          o.pin = { gatewayCpu: g, restCpu: r };
        } else if (v !== undefined && !v.startsWith('--')) {
          problems.push(`--pin takes GATEWAY_CPU,REST_CPU such as 0,1 (got ${v})`);
          i++;
        } else {
          o.pin = { gatewayCpu: 0, restCpu: 1 };
        }
        break;
      }
      case '--gateway-env': {
        const v = value() ?? '';
        const eq = v.indexOf('=');
        if (eq < 1) problems.push(`--gateway-env needs KEY=VALUE (got ${v})`);
        else o.gatewayEnv[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case '--control-process':
        o.controlProcess = true;
        break;
      case '--roles':
        o.roles = true;
        break;
      case '--mixed':
        o.mixed ??= { loginsPerSecond: 20, connectsPerSecond: 5 };
        break;
      case '--mixed-rates': {
        const [l, c] = (value() ?? '').split(',');
        o.mixed = {
          loginsPerSecond: num('--mixed-rates (sign-ins)', l, 0, 1000),
          connectsPerSecond: num('--mixed-rates (connects)', c, 0, 1000),
        };
        break;
      }
      case '--long-task-ms':
        o.longTaskMs = num(flag, value(), 1, 10_000);
        break;
      case '--out':
        o.outDir = value() ?? o.outDir;
        break;
      case '--label':
        o.label = value() ?? null;
        break;
      case '--setup-timeout':
        o.setupTimeoutSeconds = num(flag, value(), 1, 600);
        break;
      case '--seed':
        o.seed = Math.round(num(flag, value(), 0, 2 ** 31));
        break;
      case '--help':
      case '-h':
        o.help = true;
        break;
      default:
        problems.push(`unknown option ${flag}`);
    }
  }
  if (o.controlProcess && o.mixed === null) problems.push('--control-process needs --mixed');
  if (o.roles && (o.store !== 'postgres' || !o.redis))
    problems.push('--roles needs --store postgres --redis');
  if (o.roles && o.controlProcess)
    problems.push('--roles already has a control-plane process: not with --control-process');
  if ((o.roles || o.controlProcess) && o.workers > 1)
    problems.push('--control-process runs one relay process: not with --workers');
  if (problems.length > 0) throw new Error(`bad options:\n  - ${problems.join('\n  - ')}\n\n${usage}`);
  return o;
}
