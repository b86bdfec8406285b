// Redis that fails over, with real servers on free loopback ports: one primary + one replica + three
// sentinels, and a three-primary + three-replica Redis Cluster (test/helpers/redis-ha.ts).
import { after, before, describe } from 'node:test';
import type { RedisSettings } from '../src/config/config.js';
import { contractSuite, redisHarness } from './helpers/coordination-contract.js';
import {
  startRedisCluster,
  startRedisSentinelSet,
  type RedisClusterFixture,
  type RedisSentinelFixture,
} from './helpers/redis-ha.js';

let sentinel: RedisSentinelFixture | undefined;
let cluster: RedisClusterFixture | undefined;

const sentinelSettings = (f: RedisSentinelFixture): RedisSettings => ({
  mode: 'sentinel',
  sentinels: f.sentinels,
  name: f.masterName,
  sentinelPassword: null,
  username: null,
  password: null,
  tls: null,
});
const clusterSettings = (f: RedisClusterFixture): RedisSettings => ({
  mode: 'cluster',
  nodes: f.nodes,
  username: null,
  password: null,
  tls: null,
});

void describe('Redis through Sentinel and on a Cluster', { timeout: 120_000 }, () => {
  before(async () => {
    [sentinel, cluster] = await Promise.all([startRedisSentinelSet(), startRedisCluster()]);
  });
  after(async () => {
    await Promise.all([sentinel?.dispose(), cluster?.dispose()]);
  });

  contractSuite('redis through sentinel', () => redisHarness(sentinelSettings(sentinel!)));
  contractSuite('redis cluster', () => redisHarness(clusterSettings(cluster!)));
});
