// Re-embed the SQL migrations (sqlx::migrate!) whenever they change.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
