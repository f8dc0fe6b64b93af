// Models → Catalog: the models GET /v2/model-catalog offers (the built-in list or the server's
// --model-catalog-file), each with its variants (source, backend, quantization, size). Deploy opens the
// deploy form filled in with the variant and a suggested name, so a model is two clicks away; the
// compatibility check there runs as for any other deployment.

import { RocketOutlined } from "@ant-design/icons";
import { Alert, Button, Card, Empty, Input, Select, Space, Spin, Table, Tag, Typography } from "antd";
import { useEffect, useMemo, useState, type HTMLAttributes } from "react";
import { useNavigate } from "react-router";
import { describe, getOptional } from "../../api/http";
import Unavailable from "../../components/Unavailable";
import { useT } from "../../i18n";
import { bytes } from "../../util/format";
import { SOURCE_FIELDS, SOURCE_LABELS } from "../deploy/sources";

export interface CatalogVariant {
  source: string;
  backend: string;
  backend_parameters?: string[];
  quantization?: string | null;
  size?: string | null;
  file_size?: number | null;
  [sourceField: string]: unknown;
}

export interface CatalogEntry {
  name: string;
  description: string;
  categories: string[];
  home?: string | null;
  variants: CatalogVariant[];
}

/** What the deploy form takes from the catalog (router state of /models/deploy). */
export interface CatalogChoice {
  entry: string;
  name: string;
  variant: CatalogVariant;
}

/** A model name from the entry's name and the variant's quantization: "smollm2-135m-instruct-q8_0". */
export function catalogName(entry: CatalogEntry, variant: CatalogVariant): string {
  const parts = [entry.name, variant.quantization ?? ""].filter(Boolean).join(" ");
  return parts
    .toLowerCase()
    .replace(/[^a-z0-9._:@+-]+/g, "-")
    .replace(/^[^a-z0-9]+|-+$/g, "")
    .slice(0, 100);
}

/** A key for test ids and rows: the entry's name in lower case, spaces as dashes. */
export function entryKey(entry: CatalogEntry): string {
  return entry.name.toLowerCase().replace(/\s+/g, "-");
}

function sourceText(variant: CatalogVariant): string {
  return (SOURCE_FIELDS[variant.source] ?? [])
    .map((field) => variant[field.name])
    .filter((value) => typeof value === "string" && value)
    .join(" · ");
}

export default function Catalog() {
  const t = useT();
  const navigate = useNavigate();
  const [entries, setEntries] = useState<CatalogEntry[] | null>(null);
  const [missing, setMissing] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [search, setSearch] = useState("");
  const [category, setCategory] = useState<string | undefined>(undefined);

  useEffect(() => {
    getOptional<{ items: CatalogEntry[] }>("/v2/model-catalog")
      .then((body) => {
        if (body === null) setMissing(true);
        else setEntries(body.items);
      })
      .catch((reason) => setError(describe(reason)));
  }, []);

  const categories = useMemo(() => [...new Set((entries ?? []).flatMap((e) => e.categories))].sort(), [entries]);
  const shown = useMemo(() => {
    const needle = search.trim().toLowerCase();
    return (entries ?? []).filter(
      (e) =>
        (!needle || e.name.toLowerCase().includes(needle) || e.description.toLowerCase().includes(needle)) &&
        (!category || e.categories.includes(category)),
    );
  }, [entries, search, category]);

  if (missing) {
    return (
      <Card title={t("menu.catalog")}>
        <Unavailable what="/v2/model-catalog" />
      </Card>
    );
  }

  const deploy = (entry: CatalogEntry, variant: CatalogVariant) => {
    const choice: CatalogChoice = { entry: entry.name, name: catalogName(entry, variant), variant };
    navigate("/models/deploy", { state: { catalog: choice } });
  };

  return (
    <Card
      title={t("menu.catalog")}
      data-testid="catalog"
      extra={
        <Space>
          <Input.Search
            allowClear
            placeholder={t("catalog.search")}
            onChange={(event) => setSearch(event.target.value)}
            style={{ width: 260 }}
            data-testid="catalog-search"
          />
          <Select
            allowClear
            placeholder={t("catalog.category")}
            value={category}
            onChange={setCategory}
            style={{ width: 160 }}
            options={categories.map((value) => ({ value, label: value }))}
          />
        </Space>
      }
    >
      <Typography.Paragraph type="secondary">{t("catalog.intro")}</Typography.Paragraph>
      {error && <Alert type="error" showIcon message={error} style={{ marginBottom: 12 }} />}
      {entries === null && !error && <Spin style={{ display: "block", margin: 40 }} />}
      {entries !== null && shown.length === 0 && <Empty description={t("catalog.empty")} />}
      <Space direction="vertical" size="middle" style={{ width: "100%" }}>
        {shown.map((entry) => (
          <Card
            key={entry.name}
            size="small"
            data-testid={`catalog-entry-${entryKey(entry)}`}
            title={
              <Space wrap>
                <span>{entry.name}</span>
                {entry.categories.map((c) => (
                  <Tag key={c}>{c}</Tag>
                ))}
              </Space>
            }
            extra={
              entry.home ? (
                <Typography.Link href={entry.home} target="_blank" rel="noreferrer">
                  {t("catalog.home")}
                </Typography.Link>
              ) : undefined
            }
          >
            {entry.description && <Typography.Paragraph style={{ marginBottom: 8 }}>{entry.description}</Typography.Paragraph>}
            <Table<CatalogVariant & { index: number }>
              size="small"
              rowKey="index"
              pagination={false}
              dataSource={entry.variants.map((variant, index) => ({ ...variant, index }))}
              onRow={(variant) => ({ "data-testid": `catalog-variant-${entryKey(entry)}-${variant.index}` }) as HTMLAttributes<HTMLElement>}
              columns={[
                {
                  title: t("catalog.source"),
                  render: (_, variant) => (
                    <Space direction="vertical" size={0}>
                      <Tag>{SOURCE_LABELS[variant.source] ? t(SOURCE_LABELS[variant.source]) : variant.source}</Tag>
                      <Typography.Text code style={{ fontSize: 12 }}>
                        {sourceText(variant)}
                      </Typography.Text>
                    </Space>
                  ),
                },
                {
                  title: t("models.backend"),
                  render: (_, variant) => (
                    <Space direction="vertical" size={0}>
                      <span>{variant.backend}</span>
                      {(variant.backend_parameters ?? []).length > 0 && (
                        <Typography.Text type="secondary" style={{ fontSize: 12 }}>
                          {(variant.backend_parameters ?? []).join(" ")}
                        </Typography.Text>
                      )}
                    </Space>
                  ),
                },
                { title: t("catalog.quantization"), render: (_, variant) => variant.quantization || "-" },
                {
                  title: t("catalog.size"),
                  render: (_, variant) =>
                    [variant.size, typeof variant.file_size === "number" ? bytes(variant.file_size) : null].filter(Boolean).join(" · ") || "-",
                },
                {
                  title: t("common.actions"),
                  width: 120,
                  render: (_, variant) => (
                    <Button
                      type="primary"
                      size="small"
                      icon={<RocketOutlined />}
                      onClick={() => deploy(entry, variant)}
                      data-testid={`catalog-deploy-${entryKey(entry)}-${variant.index}`}
                    >
                      {t("deploy.submit")}
                    </Button>
                  ),
                },
              ]}
            />
          </Card>
        ))}
      </Space>
    </Card>
  );
}
