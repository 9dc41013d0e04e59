-- receive refuses a package ID it already received (replay): look it up by index.
CREATE INDEX received_package ON received (package_id);
