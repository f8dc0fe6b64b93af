// The compatibility check (POST /v2/model-evaluations): where the model would go, GPU by GPU, or why it
// would not fit anywhere, with the scheduler's hints.

import { Alert, List, Space, Table, Tag, Typography } from "antd";
import type { Assignment, Evaluation } from "../../api/types";
import { useT } from "../../i18n";
import { bytes } from "../../util/format";

interface Row {
  key: string;
  worker: string;
  device: string;
  vram: number | null;
  ram: number | null;
  role: string;
}

function rows(assignment: Assignment, role: string, prefix: string): Row[] {
  const vram = Object.values(assignment.vram ?? {});
  const devices: Row[] = assignment.gpu_ids.map((gpu, i) => ({
    key: `${prefix}-${gpu}`,
    worker: assignment.worker_name,
    device: gpu,
    vram: vram[i] ?? null,
    ram: i === 0 ? assignment.ram : null,
    role,
  }));
  if (!devices.length) {
    devices.push({ key: `${prefix}-cpu`, worker: assignment.worker_name, device: "CPU", vram: null, ram: assignment.ram, role });
  }
  return devices;
}

export default function Compatibility({ result, busy }: { result: Evaluation | null; busy: boolean }) {
  const t = useT();
  if (!result) {
    return <Typography.Text type="secondary">{busy ? t("deploy.checking") : t("deploy.checkHint")}</Typography.Text>;
  }
  if (!result.compatible) {
    return (
      <Space direction="vertical" style={{ width: "100%" }} data-testid="compatibility">
        <Alert type="warning" showIcon message={t("deploy.incompatible")} description={result.requirement} />
        <List
          size="small"
          bordered
          header={<b>{t("deploy.reasons")}</b>}
          dataSource={result.reasons ?? (result.message ? [result.message] : [])}
          renderItem={(reason) => <List.Item style={{ whiteSpace: "pre-wrap" }}>{reason}</List.Item>}
        />
        {!!result.hints?.length && (
          <List size="small" header={<b>{t("deploy.hints")}</b>} dataSource={result.hints} renderItem={(hint) => <List.Item>{hint}</List.Item>} />
        )}
      </Space>
    );
  }
  return (
    <Space direction="vertical" style={{ width: "100%" }} data-testid="compatibility">
      <Alert type="success" showIcon message={t("deploy.compatible")} description={result.requirement} />
      {result.placements.map((placement, index) => (
        <div key={index}>
          <Typography.Text strong>
            {t("deploy.replica", { n: index + 1 })} <Tag>{placement.mode}</Tag>
          </Typography.Text>
          <Typography.Paragraph type="secondary" style={{ margin: "4px 0" }}>
            {placement.summary}
          </Typography.Paragraph>
          <Table<Row>
            size="small"
            pagination={false}
            dataSource={[
              ...rows(placement.main, t("deploy.main"), `${index}-main`),
              ...placement.subordinates.flatMap((s, j) => rows(s, t("deploy.subordinate"), `${index}-sub${j}`)),
            ]}
            columns={[
              { title: t("models.worker"), dataIndex: "worker" },
              { title: t("deploy.device"), dataIndex: "device" },
              { title: "VRAM", render: (_, row) => (row.vram === null ? "-" : bytes(row.vram)) },
              { title: "RAM", render: (_, row) => (row.ram === null ? "-" : bytes(row.ram)) },
              { title: t("deploy.role"), dataIndex: "role" },
            ]}
          />
        </div>
      ))}
    </Space>
  );
}
