//! SETTINGS (RFC 9113 §6.5): each value checked as it is read (§6.5.2), unknown ones ignored.

use bytes::Buf;

use super::write::{set_length, write_head};
use super::{
    DEFAULT_MAX_FRAME_SIZE, Error, HEADER_LEN, MAX_MAX_FRAME_SIZE, MAX_WINDOW, Reason, SETTINGS,
};

/// The settings a SETTINGS frame carried (§6.5.2); those it did not carry are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    /// RFC 8441's extended CONNECT.
    pub enable_connect_protocol: Option<bool>,
}

impl Settings {
    const HEADER_TABLE_SIZE: u16 = 0x1;
    const ENABLE_PUSH: u16 = 0x2;
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    const MAX_FRAME_SIZE: u16 = 0x5;
    const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

    pub(super) fn parse(mut payload: &[u8]) -> Result<Settings, Error> {
        let bad = |reason, what| Err(Error::Connection(reason, what));
        let flag = |value: u32, what| match value {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Connection(Reason::PROTOCOL_ERROR, what)),
        };
        let mut settings = Settings::default();
        while payload.len() >= 6 {
            let id = payload.get_u16();
            let value = payload.get_u32();
            match id {
                Settings::HEADER_TABLE_SIZE => settings.header_table_size = Some(value),
                Settings::ENABLE_PUSH => {
                    settings.enable_push = Some(flag(value, "SETTINGS_ENABLE_PUSH not 0 or 1")?)
                }
                Settings::MAX_CONCURRENT_STREAMS => settings.max_concurrent_streams = Some(value),
                Settings::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                    return bad(
                        Reason::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                    );
                }
                Settings::INITIAL_WINDOW_SIZE => settings.initial_window_size = Some(value),
                Settings::MAX_FRAME_SIZE
                    if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
                {
                    return bad(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_MAX_FRAME_SIZE out of range",
                    );
                }
                Settings::MAX_FRAME_SIZE => settings.max_frame_size = Some(value),
                Settings::MAX_HEADER_LIST_SIZE => settings.max_header_list_size = Some(value),
                Settings::ENABLE_CONNECT_PROTOCOL => {
                    settings.enable_connect_protocol =
                        Some(flag(value, "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1")?)
                }
                // Unknown settings are ignored (§6.5.2).
                _ => {}
            }
        }
        Ok(settings)
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        write_head(out, 0, SETTINGS, 0, 0);
        let mut put = |id: u16, value: Option<u32>| {
            if let Some(value) = value {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
        };
        put(Settings::HEADER_TABLE_SIZE, self.header_table_size);
        put(Settings::ENABLE_PUSH, self.enable_push.map(u32::from));
        put(
            Settings::MAX_CONCURRENT_STREAMS,
            self.max_concurrent_streams,
        );
        put(Settings::INITIAL_WINDOW_SIZE, self.initial_window_size);
        put(Settings::MAX_FRAME_SIZE, self.max_frame_size);
        put(Settings::MAX_HEADER_LIST_SIZE, self.max_header_list_size);
        put(
            Settings::ENABLE_CONNECT_PROTOCOL,
            self.enable_connect_protocol.map(u32::from),
        );
        let len = out.len() - start - HEADER_LEN;
        set_length(&mut out[start..], len);
    }
}
