// A resource kept live in the browser: one watch stream (`?watch=true`, newline-delimited JSON: a snapshot,
// then created/updated/deleted events) shared by every page that shows it, reconnected when it drops.
// Changes are applied at once but shown at most five times a second, so a cluster of a thousand workers
// heartbeating does not re-render the page a thousand times.

import { useSyncExternalStore } from "react";
import { ApiError, check, describe } from "../api/http";
import type { WatchEvent } from "../api/types";

export type LiveState = "connecting" | "live" | "error" | "unavailable";

export interface LiveView<T> {
  items: T[];
  byId: Map<number, T>;
  state: LiveState;
  error?: string;
  version: number;
}

const FLUSH_MS = 200;
const LINGER_MS = 15_000; // keep the stream a while after the last page leaves: navigation is cheap
const MAX_RETRY_MS = 15_000;

export class LiveCollection<T extends { id: number }> {
  private items = new Map<number, T>();
  private listeners = new Set<() => void>();
  private view: LiveView<T> = { items: [], byId: new Map(), state: "connecting", version: 0 };
  private abort: AbortController | null = null;
  private lingerTimer: ReturnType<typeof setTimeout> | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private state: LiveState = "connecting";
  private error: string | undefined;

  constructor(readonly path: string) {}

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = null;
    }
    if (!this.abort) this.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && !this.lingerTimer) {
        this.lingerTimer = setTimeout(() => this.stop(), LINGER_MS);
      }
    };
  };

  getSnapshot = (): LiveView<T> => this.view;

  /** Forget everything (at logout): the next subscriber starts a fresh stream. */
  reset(): void {
    this.stop();
    this.items = new Map();
    this.state = "connecting";
    this.error = undefined;
    this.flush();
  }

  private start(): void {
    const abort = new AbortController();
    this.abort = abort;
    void this.run(abort.signal);
  }

  private stop(): void {
    this.abort?.abort();
    this.abort = null;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lingerTimer = null;
  }

  private async run(signal: AbortSignal): Promise<void> {
    let retry = 1000;
    const separator = this.path.includes("?") ? "&" : "?";
    while (!signal.aborted) {
      try {
        const response = await fetch(`${this.path}${separator}watch=true`, { signal, credentials: "same-origin" });
        if (response.status === 404) {
          this.setState("unavailable", "not available on this server");
          return;
        }
        await check(response, this.path);
        await this.read(response, signal, () => {
          retry = 1000;
        });
      } catch (error) {
        if (signal.aborted) return;
        this.setState("error", describe(error));
        if (error instanceof ApiError && error.status === 401) return; // the app goes back to the login
      }
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, MAX_RETRY_MS);
    }
  }

  private async read(response: Response, signal: AbortSignal, onSnapshot: () => void): Promise<void> {
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    while (!signal.aborted) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line) as WatchEvent<T>;
        if (event.type === "snapshot") onSnapshot();
        this.apply(event);
      }
    }
  }

  private apply(event: WatchEvent<T>): void {
    switch (event.type) {
      case "snapshot":
        this.items = new Map((event.items ?? []).map((item) => [item.id, item]));
        this.state = "live";
        this.error = undefined;
        this.flush(); // the first view shows at once
        return;
      case "created":
      case "updated":
        if (event.data) this.items.set(event.data.id, event.data);
        break;
      case "deleted":
        if (event.data) this.items.delete(event.data.id);
        break;
      default:
        return;
    }
    this.scheduleFlush();
  }

  private setState(state: LiveState, error?: string): void {
    this.state = state;
    this.error = error;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  private flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const items = [...this.items.values()].sort((a, b) => a.id - b.id);
    this.view = {
      items,
      byId: new Map(this.items),
      state: this.state,
      error: this.error,
      version: this.view.version + 1,
    };
    for (const listener of this.listeners) listener();
  }
}

export function useLive<T extends { id: number }>(collection: LiveCollection<T>): LiveView<T> {
  return useSyncExternalStore(collection.subscribe, collection.getSnapshot);
}
