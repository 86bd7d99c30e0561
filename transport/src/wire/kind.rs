//! Packet kinds and the control byte: bit 7 Control, bits 6..1 Kind, bit 0 Done.

const CONTROL_BIT: u8 = 0x80;
const DONE_BIT: u8 = 0x01;
const KIND_MASK: u8 = 0x7e;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Invoke,
    Message,
    Error,
    Cancel,
    Close,
    CloseSend,
    InvokeMetadata,
    /// 0 (reserved) or 8..=63: meaningless to us. Ignored when the packet has the Control flag, fatal otherwise.
    Unknown(u8),
}

impl Kind {
    pub fn from_code(code: u8) -> Kind {
        match code {
            1 => Kind::Invoke,
            2 => Kind::Message,
            3 => Kind::Error,
            4 => Kind::Cancel,
            5 => Kind::Close,
            6 => Kind::CloseSend,
            7 => Kind::InvokeMetadata,
            other => Kind::Unknown(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Kind::Invoke => 1,
            Kind::Message => 2,
            Kind::Error => 3,
            Kind::Cancel => 4,
            Kind::Close => 5,
            Kind::CloseSend => 6,
            Kind::InvokeMetadata => 7,
            Kind::Unknown(other) => other & (KIND_MASK >> 1),
        }
    }

    /// Go drpc sends Cancel, and only Cancel, with the Control flag.
    pub fn sent_as_control(self) -> bool {
        matches!(self, Kind::Cancel)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlByte {
    pub kind: Kind,
    pub control: bool,
    pub done: bool,
}

impl ControlByte {
    pub fn parse(byte: u8) -> ControlByte {
        ControlByte {
            kind: Kind::from_code((byte & KIND_MASK) >> 1),
            control: byte & CONTROL_BIT != 0,
            done: byte & DONE_BIT != 0,
        }
    }

    pub fn to_byte(self) -> u8 {
        let mut byte = self.kind.code() << 1;
        if self.control {
            byte |= CONTROL_BIT;
        }
        if self.done {
            byte |= DONE_BIT;
        }
        byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_as_go_sends_them() {
        let b = |kind, control, done| ControlByte { kind, control, done }.to_byte();
        assert_eq!(b(Kind::Invoke, false, true), 0x03);
        assert_eq!(b(Kind::Message, false, true), 0x05);
        assert_eq!(b(Kind::Message, false, false), 0x04);
        assert_eq!(b(Kind::Error, false, true), 0x07);
        assert_eq!(b(Kind::Cancel, true, true), 0x89);
        assert_eq!(b(Kind::Close, false, true), 0x0b);
        assert_eq!(b(Kind::CloseSend, false, true), 0x0d);
        assert_eq!(b(Kind::InvokeMetadata, false, true), 0x0f);
    }

    #[test]
    fn every_byte_parses_and_round_trips() {
        for byte in 0..=u8::MAX {
            assert_eq!(ControlByte::parse(byte).to_byte(), byte);
        }
    }
}
