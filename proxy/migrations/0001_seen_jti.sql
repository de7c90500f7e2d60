-- Callback-token ids already used, shared by every proxy replica (`[replay_store]`): a token
-- replayed to another replica before it expires is refused there too.
CREATE TABLE switchyard_proxy.seen_jti (
    -- The backend tag the callback came for: partners' jtis are unique per partner only.
    scope text NOT NULL,
    jti text NOT NULL,
    -- Unix second the token expires at (its exp plus the leeway); the row may go after it.
    until_unix bigint NOT NULL,
    PRIMARY KEY (scope, jti)
);
CREATE INDEX seen_jti_until ON switchyard_proxy.seen_jti (until_unix);
