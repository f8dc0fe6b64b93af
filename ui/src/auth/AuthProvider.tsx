// Who is logged in: the session cookie's user (GET /v2/users/me), login, the forced first password
// change, and logout. An answer of 401 anywhere brings the login page back.

import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { ApiError, get, post, UNAUTHORIZED_EVENT } from "../api/http";
import type { User } from "../api/types";
import { resetAll } from "../live/resources";

export type AuthStatus = "loading" | "anonymous" | "needs-password" | "ready";

interface Auth {
  status: AuthStatus;
  user: User | null;
  /** The password typed at login, kept only until the forced change needs it as the current one. */
  typedPassword: string | null;
  login: (username: string, password: string) => Promise<void>;
  changePassword: (current: string, next: string) => Promise<void>;
  logout: () => Promise<void>;
  refresh: () => Promise<void>;
}

const Context = createContext<Auth | null>(null);

function statusOf(user: User): AuthStatus {
  return user.require_password_change ? "needs-password" : "ready";
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [status, setStatus] = useState<AuthStatus>("loading");
  const [user, setUser] = useState<User | null>(null);
  const [typedPassword, setTypedPassword] = useState<string | null>(null);

  const signedOut = useCallback(() => {
    resetAll();
    setUser(null);
    setTypedPassword(null);
    setStatus("anonymous");
  }, []);

  const refresh = useCallback(async () => {
    try {
      const me = await get<User>("/v2/users/me");
      setUser(me);
      setStatus(statusOf(me));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) signedOut();
      else throw error;
    }
  }, [signedOut]);

  useEffect(() => {
    refresh().catch(() => setStatus("anonymous"));
  }, [refresh]);

  useEffect(() => {
    const onUnauthorized = () => signedOut();
    window.addEventListener(UNAUTHORIZED_EVENT, onUnauthorized);
    return () => window.removeEventListener(UNAUTHORIZED_EVENT, onUnauthorized);
  }, [signedOut]);

  const value = useMemo<Auth>(
    () => ({
      status,
      user,
      typedPassword,
      refresh,
      login: async (username, password) => {
        const me = await post<User>("/auth/login", { username, password });
        setUser(me);
        setTypedPassword(me.require_password_change ? password : null);
        setStatus(statusOf(me));
      },
      changePassword: async (current, next) => {
        const me = await post<User>("/auth/update-password", { current_password: current, new_password: next });
        setUser(me);
        setTypedPassword(null);
        setStatus(statusOf(me));
      },
      logout: async () => {
        try {
          await post("/auth/logout");
        } finally {
          signedOut();
        }
      },
    }),
    [status, user, typedPassword, refresh, signedOut],
  );
  return <Context.Provider value={value}>{children}</Context.Provider>;
}

export function useAuth(): Auth {
  const value = useContext(Context);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}
