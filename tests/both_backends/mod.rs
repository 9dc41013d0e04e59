//! `on_both_backends!`, for the test files that run each scenario on the
//! relay's embedded SQLite and on PostgreSQL: `NAME::sqlite` and
//! `NAME::postgres` tests for each `async fn NAME(Backend)` (the calling
//! file brings `Backend` into scope).

/// `NAME::sqlite` and `NAME::postgres` tests for each `async fn NAME(Backend)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(Backend::Postgres).await
                }
            }
        )*
    };
}
