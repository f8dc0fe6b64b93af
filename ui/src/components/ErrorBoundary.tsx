// A page that fails to render says so in words, instead of leaving the screen blank.

import { Button, Result } from "antd";
import { Component, type ReactNode } from "react";

interface State {
  error: Error | null;
}

export default class ErrorBoundary extends Component<{ children: ReactNode; resetKey?: string }, State> {
  state: State = { error: null };

  static getDerivedStateFromError(error: Error): State {
    return { error };
  }

  componentDidCatch(error: Error, info: { componentStack?: string | null }) {
    console.error("page failed to render:", error, info.componentStack);
  }

  componentDidUpdate(previous: { resetKey?: string }) {
    if (previous.resetKey !== this.props.resetKey && this.state.error) this.setState({ error: null });
  }

  render() {
    if (!this.state.error) return this.props.children;
    return (
      <Result
        status="error"
        title="This page failed to show"
        subTitle={this.state.error.message}
        data-testid="page-error"
        extra={<Button onClick={() => window.location.reload()}>Reload</Button>}
      />
    );
  }
}
