// A server-side paginated list (GET path?page=&perPage=), reloaded on demand.

import { useCallback, useEffect, useState } from "react";
import { describe, get } from "../api/http";
import type { Page } from "../api/types";

export function usePaged<T>(path: string, pageSize = 20) {
  const [page, setPage] = useState(1);
  const [perPage, setPerPage] = useState(pageSize);
  const [data, setData] = useState<Page<T> | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);
  const separator = path.includes("?") ? "&" : "?";
  const reload = useCallback(async () => {
    setLoading(true);
    try {
      setData(await get<Page<T>>(`${path}${separator}page=${page}&perPage=${perPage}`));
      setError(null);
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setLoading(false);
    }
  }, [path, separator, page, perPage]);
  useEffect(() => {
    void reload();
  }, [reload]);
  return {
    items: data?.items ?? [],
    error,
    loading,
    reload,
    pagination: {
      current: page,
      pageSize: perPage,
      total: data?.pagination.total ?? 0,
      hideOnSinglePage: true,
      showSizeChanger: true,
      onChange: (next: number, size: number) => {
        setPage(next);
        setPerPage(size);
      },
    },
  };
}
