// The shapes of the public API the UI reads (see /docs on the server).

export interface Page<T> {
  items: T[];
  pagination: { page: number; perPage: number; total: number; totalPage: number };
}

export interface User {
  id: number;
  username: string;
  full_name: string;
  is_admin: boolean;
  require_password_change: boolean;
  created_at: string;
  updated_at: string;
}

export interface ApiKey {
  id: number;
  name: string;
  description: string;
  access_key: string;
  user_id: number;
  expires_at: string | null;
  created_at: string;
}

export interface MemoryInfo {
  total: number;
  used: number;
  allocated: number;
  utilization_rate: number;
  is_unified_memory: boolean;
}

export interface GPUDevice {
  index: number;
  name: string;
  vendor: string;
  type: string;
  uuid: string;
  id: string;
  memory: MemoryInfo;
  core: { total: number; utilization_rate: number };
  temperature: number | null;
  virtual: boolean;
}

export interface WorkerStatus {
  cpu: { total: number; utilization_rate: number };
  memory: MemoryInfo;
  swap: { total: number; used: number };
  filesystem: { mount_point: string; total: number; used: number; free: number }[];
  os: { name: string; version: string };
  kernel: { name: string; release: string; version: string; architecture: string };
  uptime: { uptime: number; boot_time: string };
  gpu_devices: GPUDevice[];
}

export type WorkerState = "ready" | "not_ready" | "unreachable";

export interface Worker {
  id: number;
  name: string;
  hostname: string;
  ip: string;
  port: number;
  labels: Record<string, string>;
  state: WorkerState;
  state_message: string;
  status: WorkerStatus;
  system_reserved: { ram: number; vram: number };
  heartbeat_interval: number;
  last_heartbeat_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface Model {
  id: number;
  name: string;
  description: string;
  source: string;
  local_path?: string | null;
  backend: string;
  backend_version: string | null;
  backend_parameters: string[];
  env: Record<string, string>;
  replicas: number;
  ready_replicas: number;
  placement_strategy: string;
  worker_selector: Record<string, string>;
  gpu_selector: { gpu_ids: string[] } | null;
  cpu_offloading: boolean;
  distributed_inference_across_workers: boolean;
  restart_on_error: boolean;
  created_at: string;
  updated_at: string;
  [field: string]: unknown; // source fields added by other sources (huggingface_repo_id, ...)
}

export type InstanceState =
  | "pending"
  | "analyzing"
  | "scheduled"
  | "initializing"
  | "downloading"
  | "starting"
  | "running"
  | "error"
  | "unreachable";

export interface ModelInstance {
  id: number;
  name: string;
  model_id: number;
  model_name: string;
  worker_id: number | null;
  worker_name: string | null;
  worker_ip: string | null;
  port: number | null;
  pid: number | null;
  state: InstanceState;
  state_message: string;
  restart_count: number;
  gpu_indexes: number[];
  computed_resource_claim: { ram: number; vram: Record<string, number> } | null;
  subordinate_workers: { worker_id: number; worker_name: string; gpu_indexes: number[] }[];
  resolved_path: string | null;
  created_at: string;
  updated_at: string;
}

export interface Assignment {
  worker_id: number;
  worker_name: string;
  gpu_ids: string[];
  ram: number;
  vram: Record<string, number>;
  cpu_threads: number;
  offload_layers: number;
  total_layers: number;
}

export interface Evaluation {
  name: string;
  compatible: boolean;
  requirement?: string;
  placements: { mode: string; summary: string; main: Assignment; subordinates: Assignment[] }[];
  reasons?: string[];
  hints?: string[];
  message?: string;
}

export interface WatchEvent<T> {
  type: "snapshot" | "created" | "updated" | "deleted" | "keepalive";
  items?: T[];
  data?: T;
}

export interface WorkerJoin {
  token_file: string | null;
  token_hint: string;
  server_port: number;
  tls: boolean;
  command: string;
}
