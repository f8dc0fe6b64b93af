// The cluster at a glance: workers, GPUs (memory and utilization), models and instances by state, and
// usage over time where the server records it.

import { Alert, Card, Col, Empty, Progress, Row, Statistic, Table, Tag } from "antd";
import { useEffect, useMemo, useState } from "react";
import { describe, getOptional } from "../api/http";
import type { GPUDevice } from "../api/types";
import BarChart, { type Bar } from "../components/BarChart";
import { maybe, useT } from "../i18n";
import { useLive } from "../live/collection";
import { instances as liveInstances, models as liveModels, workers as liveWorkers } from "../live/resources";
import { bytes, percent, ratio } from "../util/format";

const STATE_COLORS: Record<string, string> = {
  running: "#52c41a",
  ready: "#52c41a",
  pending: "#faad14",
  error: "#ff4d4f",
  unreachable: "#ff4d4f",
  not_ready: "#ff4d4f",
};

interface GPURow extends GPUDevice {
  key: string;
  worker: string;
}

function countBy<T>(items: T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return counts;
}

interface UsageItem {
  hour?: string | null;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

interface UsageReport {
  items: UsageItem[];
  total: { requests: number; total_tokens: number };
}

const USAGE_HOURS = 24;

/** GET /v2/usage by hour over the last day: one bar per hour that served requests (local time). */
function usageBars(report: UsageReport): Bar[] {
  return report.items
    .filter((item) => item.hour)
    .map((item) => {
      const when = new Date(String(item.hour));
      const label = `${String(when.getHours()).padStart(2, "0")}:00`;
      return {
        label: `${when.getMonth() + 1}-${when.getDate()} ${label}`,
        value: item.prompt_tokens + item.completion_tokens,
        stack: [
          { value: item.prompt_tokens, color: "#91caff" },
          { value: item.completion_tokens, color: "#1677ff" },
        ],
      };
    });
}

export default function Dashboard() {
  const t = useT();
  const workers = useLive(liveWorkers);
  const models = useLive(liveModels);
  const instances = useLive(liveInstances);
  const [usage, setUsage] = useState<{ state: "loading" | "absent" | "ok" | "error"; data?: UsageReport; error?: string }>({
    state: "loading",
  });

  useEffect(() => {
    const load = () => {
      const start = new Date(Date.now() - (USAGE_HOURS - 1) * 3600_000).toISOString();
      getOptional<UsageReport>(`/v2/usage?group_by=hour&start=${encodeURIComponent(start)}`)
        .then((data) => setUsage(data === null ? { state: "absent" } : { state: "ok", data }))
        .catch((error) => setUsage({ state: "error", error: describe(error) }));
    };
    load();
    const timer = window.setInterval(load, 60_000); // the server writes usage in batches, every few seconds
    return () => window.clearInterval(timer);
  }, []);

  const gpus = useMemo<GPURow[]>(
    () =>
      workers.items.flatMap((worker) =>
        (worker.status?.gpu_devices ?? []).map((gpu) => ({ ...gpu, key: `${worker.id}:${gpu.index}`, worker: worker.name })),
      ),
    [workers],
  );
  const vram = useMemo(
    () => gpus.reduce((sum, gpu) => ({ total: sum.total + gpu.memory.total, used: sum.used + gpu.memory.used }), { total: 0, used: 0 }),
    [gpus],
  );
  const ram = useMemo(
    () =>
      workers.items.reduce(
        (sum, w) => ({ total: sum.total + (w.status?.memory?.total ?? 0), used: sum.used + (w.status?.memory?.used ?? 0) }),
        { total: 0, used: 0 },
      ),
    [workers],
  );
  const workerStates = useMemo(() => countBy(workers.items, (w) => w.state), [workers]);
  const instanceStates = useMemo(() => countBy(instances.items, (i) => i.state), [instances]);
  const readyModels = models.items.filter((m) => m.replicas > 0 && m.ready_replicas >= m.replicas).length;
  const running = instanceStates.get("running") ?? 0;

  const stateBars = (counts: Map<string, number>): Bar[] =>
    [...counts.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([state, value]) => ({ label: maybe(t, `state.${state}`, state), value, color: STATE_COLORS[state] ?? "#1677ff" }));

  const streamError = [workers, models, instances].find((view) => view.state === "error")?.error;

  return (
    <div data-testid="dashboard">
      {streamError && <Alert type="warning" showIcon message={t("common.liveError", { error: streamError })} style={{ marginBottom: 16 }} />}
      <Row gutter={[16, 16]}>
        <Col xs={12} md={6}>
          <Card>
            <Statistic title={t("dashboard.workers")} value={workerStates.get("ready") ?? 0} suffix={`/ ${workers.items.length}`} />
          </Card>
        </Col>
        <Col xs={12} md={6}>
          <Card>
            <Statistic title={t("dashboard.gpus")} value={gpus.length} />
          </Card>
        </Col>
        <Col xs={12} md={6}>
          <Card>
            <Statistic title={t("dashboard.models")} value={readyModels} suffix={`/ ${models.items.length}`} />
          </Card>
        </Col>
        <Col xs={12} md={6}>
          <Card>
            <Statistic title={t("dashboard.instances")} value={running} suffix={`/ ${instances.items.length}`} />
          </Card>
        </Col>
        <Col xs={24} md={12}>
          <Card title={t("dashboard.vram")}>
            <Progress percent={Math.round(ratio(vram.used, vram.total))} />
            <div style={{ color: "#888" }}>
              {bytes(vram.used)} / {bytes(vram.total)}
            </div>
          </Card>
        </Col>
        <Col xs={24} md={12}>
          <Card title={t("dashboard.ram")}>
            <Progress percent={Math.round(ratio(ram.used, ram.total))} />
            <div style={{ color: "#888" }}>
              {bytes(ram.used)} / {bytes(ram.total)}
            </div>
          </Card>
        </Col>
        <Col xs={24} md={12}>
          <Card title={t("dashboard.workerStates")}>
            <BarChart bars={stateBars(workerStates)} empty={t("dashboard.noWorkers")} />
          </Card>
        </Col>
        <Col xs={24} md={12}>
          <Card title={t("dashboard.instanceStates")}>
            <BarChart bars={stateBars(instanceStates)} empty={t("dashboard.noInstances")} />
          </Card>
        </Col>
        <Col span={24}>
          <Card title={t("dashboard.gpuTable")}>
            <Table<GPURow>
              size="small"
              rowKey="key"
              dataSource={gpus}
              pagination={{ pageSize: 10, hideOnSinglePage: true, showSizeChanger: true }}
              locale={{ emptyText: <Empty description={t("dashboard.noGpus")} /> }}
              columns={[
                { title: t("workers.worker"), dataIndex: "worker" },
                { title: "GPU", render: (_, gpu) => <>{gpu.name} {gpu.virtual && <Tag>{t("workers.virtual")}</Tag>}</> },
                { title: t("workers.vendor"), dataIndex: "vendor" },
                {
                  title: t("workers.vram"),
                  render: (_, gpu) => (
                    <div style={{ minWidth: 160 }}>
                      <Progress size="small" percent={Math.round(ratio(gpu.memory.used, gpu.memory.total))} />
                      <span style={{ color: "#888", fontSize: 12 }}>
                        {bytes(gpu.memory.used)} / {bytes(gpu.memory.total)}
                      </span>
                    </div>
                  ),
                },
                { title: t("workers.utilization"), render: (_, gpu) => percent(gpu.core?.utilization_rate) },
                { title: t("workers.temperature"), render: (_, gpu) => (gpu.temperature === null ? "-" : `${gpu.temperature} °C`) },
              ]}
            />
          </Card>
        </Col>
        <Col span={24}>
          <Card title={t("dashboard.usage")}>
            {usage.state === "ok" && usage.data && usage.data.total.requests > 0 ? (
              <div data-testid="usage-chart">
                <div data-testid="usage-total" style={{ color: "#888", marginBottom: 8 }}>
                  {t("dashboard.usageTotal", {
                    tokens: String(usage.data.total.total_tokens),
                    requests: String(usage.data.total.requests),
                  })}
                </div>
                <BarChart bars={usageBars(usage.data)} empty={t("dashboard.noUsage")} />
              </div>
            ) : usage.state === "ok" ? (
              <Empty data-testid="usage-empty" image={Empty.PRESENTED_IMAGE_SIMPLE} description={t("dashboard.noUsage")} />
            ) : usage.state === "error" ? (
              <Alert type="error" showIcon message={usage.error} />
            ) : (
              <Empty
                data-testid="usage-empty"
                description={usage.state === "absent" ? t("dashboard.usageUnavailable") : t("common.loading")}
              />
            )}
          </Card>
        </Col>
      </Row>
    </div>
  );
}
