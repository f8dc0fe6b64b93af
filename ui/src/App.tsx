// The pages and who may see them: the login (and forced password change) first; administrators get the
// management pages, every user the playground, their API keys and profile.

import { Spin } from "antd";
import { lazy, Suspense, type ReactNode } from "react";
import { Navigate, Route, Routes, useLocation } from "react-router";
import { useAuth } from "./auth/AuthProvider";
import ErrorBoundary from "./components/ErrorBoundary";
import Login from "./pages/Login";

// The frame (menus) loads after the login, so the login page is all a first visit downloads.
const AppLayout = lazy(() => import("./layout/AppLayout"));
const Dashboard = lazy(() => import("./pages/Dashboard"));
const Models = lazy(() => import("./pages/models/Models"));
const Catalog = lazy(() => import("./pages/models/Catalog"));
const DeployModel = lazy(() => import("./pages/deploy/DeployModel"));
const Workers = lazy(() => import("./pages/Workers"));
const ModelFiles = lazy(() => import("./pages/ModelFiles"));
const ApiKeys = lazy(() => import("./pages/ApiKeys"));
const Users = lazy(() => import("./pages/Users"));
const Profile = lazy(() => import("./pages/Profile"));
const Chat = lazy(() => import("./pages/playground/Chat"));
const Embeddings = lazy(() => import("./pages/playground/Embeddings"));

const loading = <Spin style={{ display: "block", margin: "80px auto" }} />;

function AdminOnly({ children }: { children: ReactNode }) {
  const { user } = useAuth();
  return user?.is_admin ? <>{children}</> : <Navigate to="/playground" replace />;
}

export default function App() {
  const { status, user } = useAuth();
  const location = useLocation();
  if (status === "loading") return loading;
  if (status !== "ready") {
    return (
      <Routes>
        <Route path="*" element={<Login />} />
      </Routes>
    );
  }
  const home = user?.is_admin ? "/dashboard" : "/playground";
  return (
    <Suspense fallback={loading}>
    <AppLayout>
      <ErrorBoundary resetKey={location.pathname}>
      <Suspense fallback={loading}>
        <Routes>
          <Route path="/" element={<Navigate to={home} replace />} />
          <Route path="/login" element={<Navigate to={home} replace />} />
          <Route path="/dashboard" element={<AdminOnly><Dashboard /></AdminOnly>} />
          <Route path="/models" element={<AdminOnly><Models /></AdminOnly>} />
          <Route path="/catalog" element={<AdminOnly><Catalog /></AdminOnly>} />
          <Route path="/models/deploy" element={<AdminOnly><DeployModel /></AdminOnly>} />
          <Route path="/models/:id/edit" element={<AdminOnly><DeployModel /></AdminOnly>} />
          <Route path="/resources/workers" element={<AdminOnly><Workers /></AdminOnly>} />
          <Route path="/resources/model-files" element={<AdminOnly><ModelFiles /></AdminOnly>} />
          <Route path="/users" element={<AdminOnly><Users /></AdminOnly>} />
          <Route path="/playground" element={<Chat />} />
          <Route path="/playground/embeddings" element={<Embeddings />} />
          <Route path="/api-keys" element={<ApiKeys />} />
          <Route path="/profile" element={<Profile />} />
          <Route path="*" element={<Navigate to={home} replace />} />
        </Routes>
      </Suspense>
      </ErrorBoundary>
    </AppLayout>
    </Suspense>
  );
}
