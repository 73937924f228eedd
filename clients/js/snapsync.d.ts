// snapsync.d.ts - types of snapsync-client (snapsync.js).

export declare const VERSION: string;

export interface Entity<B = Record<string, unknown>> {
  collection: string;
  id: string;
  rev: string | null;           // null while a local edit is pending
  version: number | null;
  created_at: string | null;
  updated_at: string | null;
  deleted: boolean;
  body: B | null;
  /** a local edit not settled yet (replica only) */
  pending?: boolean;
  /** v2 snapshot lines and ?style=all_revs only */
  revs?: string[];
  conflicts?: { rev: string; deleted: boolean; body: unknown }[];
}

export declare class SnapsyncError extends Error {
  name: 'SnapsyncError';
  /** the server's `error` code (`unauthorized`, `forbidden`, `conflict`, ...), or
   *  `network_error`, `invalid_snapshot`, `unsupported`, `sync_failed`, `snapshot_failed` */
  code: string;
  /** the HTTP status; 0 when no answer came */
  status: number;
  /** the answer's other members: current_rev, missing, member, retry_after, ... */
  details: Record<string, unknown>;
  constructor(code: string, message: string, status?: number, details?: Record<string, unknown>);
}

export interface ClientOptions {
  /** the server's base URL ('' = the page's origin) */
  url?: string;
  token?: string | null;
  fetch?: typeof fetch;
  /** SSE over fetch (default, sends Authorization) or the browser's EventSource (?access_token=) */
  transport?: 'fetch' | 'eventsource';
  headers?: Record<string, string>;
}

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  query?: Record<string, string | number | boolean | string[] | undefined | null>;
  signal?: AbortSignal;
  raw?: boolean;
}

export interface ServerEvent<D = any> {
  id: string;
  type: 'change' | 'snapshot' | 'sync' | 'reset' | 'shutdown' | 'overflow' | string;
  data: D;
}

export interface EventStream extends AsyncIterableIterator<ServerEvent> {
  /** resolves when the stream is open; rejects (SnapsyncError) when it is refused */
  opened: Promise<void>;
  close(): void;
}

export declare class Client {
  readonly url: string;
  token: string | null;
  constructor(opts?: ClientOptions);
  request<T = any>(method: string, path: string, opts?: RequestOptions): Promise<T>;
  requestFull<T = any>(method: string, path: string, opts?: RequestOptions): Promise<{ status: number; data: T; headers: Headers; response?: Response }>;
  status(): Promise<{ name: string; version: string; instance_id: string; uptime_s: number; spaces: number }>;
  space(name: string): Space;
  events(opts?: {
    topics?: ('change' | 'snapshot' | 'sync')[];
    spaces?: string[];
    lastEventId?: string;
    signal?: AbortSignal;
    onState?: (state: 'connecting' | 'open' | 'retrying' | 'closed') => void;
  }): EventStream;
}

export declare function snapsync(opts?: ClientOptions): Client;

export interface Page<T> extends Array<T> { nextCursor?: string | null }

export declare class Collection<B = Record<string, unknown>> {
  readonly name: string;
  /** null when absent (or deleted, unless includeDeleted) */
  get(id: string, opts?: { includeDeleted?: boolean; signal?: AbortSignal }): Promise<Entity<B> | null>;
  /** rev: undefined = the rev last seen here (If-Match), a rev, null = create only, false = unconditional */
  put(id: string, body: B, opts?: { rev?: string | null | false; signal?: AbortSignal }): Promise<Entity<B>>;
  delete(id: string, opts?: { rev?: string | false; signal?: AbortSignal }): Promise<Entity<B>>;
  list(opts?: { limit?: number; cursor?: string; signal?: AbortSignal }): AsyncIterableIterator<Page<Entity<B>>>;
}

export interface SnapshotMeta {
  id: string; space: string; kind: string; status: string; server_version: number;
  created_at: string; completed_at: string | null; entity_total: number; entity_counts: Record<string, number>;
  raw_bytes: number | null; size_bytes: number | null; sha256: string | null; integrity?: string | null;
  note?: string | null; error?: string | null; [k: string]: unknown;
}

export interface SnapshotProgress {
  snapshot: string; status: string; kind?: string; error: string | null;
  entities_done: number; entities_total: number | null; bytes: number; fraction: number;
}

export interface SyncProgress {
  job: string; phase?: string; percent?: number; pulled?: number; pushed?: number; conflicts?: number;
  status: string; fraction: number | null; [k: string]: unknown;
}

export declare class Snapshots {
  list(opts?: { kind?: string; status?: string; integrity?: string; limit?: number; cursor?: string; signal?: AbortSignal }): AsyncIterableIterator<Page<SnapshotMeta>>;
  get(id: string): Promise<SnapshotMeta>;
  newest(): Promise<SnapshotMeta | null>;
  preview(id: string): Promise<any>;
  restore(id: string, opts?: { dryRun?: boolean; confirm?: string }): Promise<any>;
  delete(id: string): Promise<null>;
  verify(id: string): Promise<{ valid: boolean; error: string | null; snapshot: SnapshotMeta }>;
  download(id: string, opts?: { signal?: AbortSignal }): Promise<Response>;
  /** streams the file: a header, then batches of entities */
  read(id: string, opts?: {
    onHeader?: (header: Record<string, any> & { server_version: number; formatVersion: number }) => void | Promise<void>;
    onEntities?: (batch: Entity[], info: { bytes: number }) => void | Promise<void>;
    batch?: number; signal?: AbortSignal;
  }): Promise<{ header: Record<string, any>; entities: number; bytes: number }>;
  /** lazy: a line in snapsync's own spelling comes as {collection, id, line} (not parsed) */
  read(id: string, opts: {
    lazy: true;
    onHeader?: (header: Record<string, any> & { server_version: number; formatVersion: number }) => void | Promise<void>;
    onEntities?: (batch: Array<Entity | SnapshotLine>, info: { bytes: number }) => void | Promise<void>;
    batch?: number; signal?: AbortSignal;
  }): Promise<{ header: Record<string, any>; entities: number; bytes: number }>;
  take(opts?: { note?: string; onProgress?: (p: SnapshotProgress) => void; signal?: AbortSignal }): Promise<SnapshotMeta>;
}

export type Resolution = 'local_wins' | 'remote_wins' | 'keep_both' | { merge: Record<string, unknown> };

export declare class Conflict {
  readonly id: string;
  readonly collection: string;
  readonly entityId: string;
  readonly currentRev: string;
  readonly conflictingRev: string | null;
  /** the body the server kept (local_wins keeps it) */
  readonly current: Record<string, unknown> | null;
  readonly currentDeleted: boolean;
  readonly currentEntity: Entity | null;
  /** the body that lost (remote_wins writes it) */
  readonly conflicting: Record<string, unknown> | null;
  readonly conflictingDeleted: boolean;
  readonly origin: string | null;
  readonly detectedAt: string | null;
  readonly raw: Record<string, unknown>;
  resolve(choice: Resolution): Promise<{ resolved: string; strategy: string; entity: Entity }>;
}

export interface PushItem { collection: string; id: string; base_rev: string | null; deleted?: boolean; body?: unknown }
export type PushResult =
  | { status: 'applied'; rev: string; version: number }
  | { status: 'conflict'; current_rev: string; conflict_id: string }
  | { status: 'error'; error: string; message: string };

type Unsubscribe = () => void;

declare class Emitter {
  on(type: string, fn: (arg: any) => void): Unsubscribe;
  off(type: string, fn: (arg: any) => void): void;
}

export declare class Space extends Emitter {
  readonly name: string;
  readonly snapshots: Snapshots;
  collection<B = Record<string, unknown>>(name: string): Collection<B>;
  info(): Promise<any>;
  syncStatus(opts?: RequestOptions): Promise<{ space: string; space_uid: string; server_version: number; entity_count: number; tombstone_count: number; conflict_count: number; digest: string; last_snapshot: string | null }>;
  changes(q?: { since?: number; limit?: number; collections?: string[]; bodies?: boolean }, opts?: RequestOptions): Promise<{ changes: Entity[]; last_version: number; more: boolean }>;
  push(changes: PushItem[], opts?: RequestOptions): Promise<{ results: PushResult[]; server_version: number }>;
  conflicts(opts?: { collection?: string; limit?: number; cursor?: string }): Promise<Page<Conflict>>;
  sync(opts: {
    peer_url: string; peer_space: string; peer_token: string; direction?: 'pull' | 'push' | 'both'; force?: boolean;
    onProgress?: (p: SyncProgress) => void; signal?: AbortSignal;
  }): Promise<any>;
  replica(opts?: ReplicaOptions): Replica;
  on(type: 'conflict', fn: (c: Conflict) => void): Unsubscribe;
  on(type: 'resolved', fn: (e: { conflict: Conflict; result: any }) => void): Unsubscribe;
}

export interface ReplicaOptions {
  persist?: 'memory' | 'indexeddb';
  collections?: string[];
  /** 'auto' (snapshot when cheaper than paging the feed), 'snapshot' or 'feed' */
  bootstrap?: 'auto' | 'snapshot' | 'feed';
  onProgress?: (p: { phase: 'snapshot' | 'feed'; done: number; total: number | null; bytes: number }) => void;
  /** the IndexedDB database name (default from url, space and collections) */
  name?: string;
}

export interface ReplicaStatus {
  state: 'starting' | 'loaded' | 'bootstrapping' | 'ready' | 'live' | 'offline' | 'paused' | 'error' | 'closed';
  online: boolean;
  version: number;
  pending: number;
  error: SnapsyncError | null;
  bootstrap: null | { method: 'snapshot' | 'feed' | 'stored'; snapshot?: string | null; entities: number; changes?: number; ms?: number };
}

export interface ReplicaChange {
  type: 'put' | 'delete' | 'reset';
  collection?: string;
  id?: string;
  entity?: Entity | null;
  source: 'remote' | 'local' | 'bootstrap';
}

export type EditResult =
  | { status: 'applied'; rev: string; version: number }
  | { status: 'conflict'; conflict: Conflict; current_rev: string }
  | { status: 'error'; error: SnapsyncError };

export interface Edit {
  seq: number; collection: string; id: string; deleted: boolean; body: unknown; base_rev: string | null;
  status: 'pending' | 'applied' | 'conflict' | 'error';
  result: EditResult | null;
  /** resolves once the edit is stored (IndexedDB) */
  queued: Promise<void>;
  settled: Promise<EditResult>;
}

export declare class Replica extends Emitter {
  readonly space: Space;
  readonly ready: Promise<Replica>;
  readonly status: ReplicaStatus;
  readonly version: number;
  readonly size: number;
  get(collection: string, id: string): Entity | null;
  query(fn?: (e: Entity) => boolean, opts?: { collection?: string }): Entity[];
  subscribe(cb: (changes: ReplicaChange[]) => void): Unsubscribe;
  put(collection: string, id: string, body: Record<string, unknown>): Edit;
  delete(collection: string, id: string): Edit;
  pending(): Edit[];
  conflicts(opts?: { collection?: string }): Promise<Page<Conflict>>;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
  on(type: 'change', fn: (changes: ReplicaChange[]) => void): Unsubscribe;
  on(type: 'status', fn: (s: ReplicaStatus) => void): Unsubscribe;
  on(type: 'conflict', fn: (c: Conflict) => void): Unsubscribe;
  on(type: 'settled', fn: (e: { edit: Edit; result: EditResult }) => void): Unsubscribe;
  on(type: 'progress', fn: (p: { phase: string; done: number; total: number | null; bytes: number }) => void): Unsubscribe;
}

// pieces, exported for tests and tools
export declare function mapError(status: number, text: string, retryAfter?: string | null): SnapsyncError;
export declare function isTransient(err: unknown): boolean;
export declare class LineSplitter { push(chunk: Uint8Array | string): string[]; end(): string[] }
export declare class SSEParser {
  constructor(onEvent: (e: { type: string; data: string; id: string }) => void, onRetry?: (ms: number) => void);
  lastEventId: string;
  feed(text: string): void;
}
export declare function parseSnapshotHeader(line: string): Record<string, any> & { format: string; formatVersion: number; server_version: number };
export declare function parseSnapshotEntity(line: string, lineNo?: number): Entity;
/** A snapshot entity line kept as text (Snapshots.read with lazy). */
export interface SnapshotLine { collection: string; id: string; line: string }
/** The collection and id of a line in snapsync's own spelling; null for any other line. */
export declare function snapshotLineKey(line: string): SnapshotLine | null;
export declare function parseSnapshotEntities(lines: string[], firstLineNo?: number): Entity[];
export declare function nextBatch<T extends { collection: string; id: string }>(queue: T[], max?: number): T[];
export declare function followerBase(edit: { base_rev: string | null }, result: { status: string; rev?: string }): string | null;
