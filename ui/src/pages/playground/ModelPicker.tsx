// The models the OpenAI API answers to (GET /v1/models), for the playgrounds.

import { ReloadOutlined } from "@ant-design/icons";
import { Button, Select, Space } from "antd";
import { useCallback, useEffect, useState } from "react";
import { describe } from "../../api/http";
import { useT } from "../../i18n";
import { listModels } from "./openai";

export default function ModelPicker({ value, onChange }: { value: string; onChange: (model: string) => void }) {
  const t = useT();
  const [models, setModels] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const load = useCallback(async () => {
    setLoading(true);
    try {
      const found = await listModels();
      setModels(found);
      setError(null);
      if (!value && found.length) onChange(found[0]);
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setLoading(false);
    }
  }, [value, onChange]);
  useEffect(() => {
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  return (
    <Space.Compact style={{ width: "100%" }}>
      <Select
        value={value || undefined}
        onChange={onChange}
        showSearch
        loading={loading}
        data-testid="playground-model"
        placeholder={error ?? t("playground.pickModel")}
        status={error ? "error" : undefined}
        notFoundContent={t("playground.noModels")}
        options={models.map((m) => ({ value: m, label: m }))}
        style={{ width: "100%" }}
      />
      <Button icon={<ReloadOutlined />} onClick={() => void load()} />
    </Space.Compact>
  );
}
